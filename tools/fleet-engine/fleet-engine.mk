# The fleet tier's test engine (tools/fleet-engine), included by the root Makefile.
#   make fleet-engine        Debian packages it needs (when missing), then the engine binary at
#                            $(FLEET_ENGINE); quick when done. Cold: see tools/fleet-engine/README.md.
#   make fleet-engine-unit   its unit tests (the RLS encoding, both command lines), run by make test
#
# Debian packages:
#   redis-server            the counters' store the tests start (tests/e2e/fleet_harness.py)
#   librocksdb-dev          limitador 0.14 cannot be built without its disk storage, hence the
#                           rocksdb crate: linking Debian's RocksDB saves building it (~10 min
#                           on 2 cores). The engine never opens RocksDB and, linked --as-needed,
#                           does not load it either.
#                           Its dependencies include libzstd-dev, which zstd-sys links through
#                           pkg-config instead of compiling zstd.
#   libclang1-14, libclang-common-14-dev
#                           librocksdb-sys runs bindgen on RocksDB's C header in any case.
#   libssl-dev, pkg-config  the redis crate's TLS support (native-tls), enabled by limitador.
# No protoc: the gRPC routing is generated without .proto files (tools/fleet-engine/build.rs).
FLEET_ENGINE := tools/fleet-engine/target/release/fleet-engine
FLEET_APT := redis-server librocksdb-dev libclang1-14 libclang-common-14-dev libssl-dev pkg-config
FLEET_LIBDIR := /usr/lib/$(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
FLEET_CARGO_ENV := ROCKSDB_LIB_DIR=$(FLEET_LIBDIR) SNAPPY_LIB_DIR=$(FLEET_LIBDIR) ZSTD_SYS_USE_PKG_CONFIG=1
FLEET_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: fleet-engine fleet-engine-unit

fleet-engine: $(FLEET_ENGINE)

# Release profile, as the binary: only the engine crate is compiled again (in test mode).
fleet-engine-unit: .fleet-apt
	$(FLEET_CARGO_ENV) nice cargo test --quiet --release --locked --manifest-path tools/fleet-engine/Cargo.toml

.fleet-apt:
	@missing=; for p in $(FLEET_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  $(FLEET_SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(FLEET_SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(FLEET_ENGINE): .fleet-apt tools/fleet-engine/Cargo.toml tools/fleet-engine/Cargo.lock tools/fleet-engine/build.rs \
		$(wildcard tools/fleet-engine/src/*.rs)
	$(FLEET_CARGO_ENV) nice cargo build --release --locked --manifest-path tools/fleet-engine/Cargo.toml
	@touch $@
