# Benchmarks, included by the root Makefile (see BENCHMARKS.md).
#   make bench          the full Envoy benchmark (a few minutes); writes bench/results/latest.{md,json}
#   make bench-smoke    the same harness in a few seconds: every configuration started, checked, hit
#   make bench-setup    wrk (apt-get, when missing) and the no-op Wasm filter; quick when done
#   make bench-micro    native criterion micro-benchmarks of the core (bench/micro), e.g.
#                       MICRO_ARGS="--warm-up-time 1 --measurement-time 3"
#   make bench-profile  where the time goes: perf split of Envoy's CPU per request (needs perf),
#                       filter variants, and the price of each kind of host call (~6 minutes)
#   make bench-instructions  instructions per request of every configuration, Envoy under
#                       valgrind's callgrind (~3-5 minutes; repeatable on a busy machine, for
#                       judging a change: INSTR_ARGS="--alt-wasm /tmp/prev.wasm");
#                       writes bench/results/instructions/latest.{md,json}
#   make soak           the filter for SOAK_SECONDS (default 600) under mixed traffic and reloads,
#                       every admission checked from Envoy's access log, RSS, 5xx (HOST=wasm|native)
NOOP_WASM := bench/noop/target/$(TARGET)/release/noop_filter.wasm
BENCH_ARGS ?=
INSTR_ARGS ?=

PROBE_WASM := bench/probe/target/$(TARGET)/release/hostcall_probe.wasm
# Filter variants and host-call probes (bench/probe: 20 calls of one kind per request), each
# compared with the first of its list, round by round.
VARIANT_CONFIGS ?= 2,p1,p2,p7,p3,4,p4,p5,5,p6
PROBE_CONFIGS ?= h-none,h-time,h-header,h-header_absent,h-header_pairs,h-property,h-shared_get,$\
h-shared_get_small,h-shared_set,h-metric,h-log,h-resp_header

.PHONY: bench bench-smoke bench-setup bench-micro bench-profile bench-instructions soak

bench-setup: .wasm-target $(NOOP_WASM)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  echo "installing wrk with apt-get"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq wrk >/dev/null; }
	@command -v wrk >/dev/null 2>&1 || { echo "wrk is still missing" >&2; exit 1; }

$(NOOP_WASM): bench/noop/Cargo.toml bench/noop/src/lib.rs | .wasm-target
	cargo build --quiet --release --target $(TARGET) --manifest-path bench/noop/Cargo.toml

bench: setup build build-native bench-setup
	$(PY) bench/envoy_bench.py --envoy $(ENVOY) $(BENCH_ARGS)

bench-smoke: setup build build-native bench-setup
	$(PY) bench/envoy_bench.py --envoy $(ENVOY) --smoke

bench-micro:
	cd bench/micro && cargo run --quiet --release --example store_bytes && cargo bench --bench core -- $(MICRO_ARGS)

$(PROBE_WASM): bench/probe/Cargo.toml bench/probe/src/lib.rs | .wasm-target
	cargo build --quiet --release --target $(TARGET) --manifest-path bench/probe/Cargo.toml

bench-profile: setup build bench-setup $(PROBE_WASM)
	$(PY) bench/profile.py 2 1 3 4 5 6 --rounds 2
	$(PY) bench/envoy_bench.py --envoy $(ENVOY) --rounds 6 --duration 2 --warmup 1 \
	  --configs $(VARIANT_CONFIGS) --out bench/results/variants
	$(PY) bench/envoy_bench.py --envoy $(ENVOY) --rounds 6 --duration 2 --warmup 1 \
	  --configs $(PROBE_CONFIGS) --out bench/results/probes

bench-instructions: setup build build-native $(NOOP_WASM)
	@command -v valgrind >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  echo "installing valgrind with apt-get"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq valgrind >/dev/null; }
	nice $(PY) bench/instructions.py --envoy $(ENVOY) $(INSTR_ARGS)

# The soak (make soak): a real Envoy with the filter for SOAK_SECONDS (default 600) under mixed
# traffic and a configuration reload every 3 s, then every admission checked against the limits
# from Envoy's access log, its RSS over time and every status (bench/soak.py; exit 1 on a breach).
# HOST=wasm (default) or native. Figures in target/soak/<host>.json.
SOAK_SECONDS ?= 600
# HOST given on the command line wins; one from the environment (some shells export the machine's
# name as HOST) only when it names a host.
SOAK_HOST := $(if $(filter command line,$(origin HOST)),$(HOST),$(or $(filter wasm native,$(HOST)),wasm))
soak: setup build build-native
	$(PY) bench/soak.py --host $(SOAK_HOST) --seconds $(SOAK_SECONDS) --json target/soak/$(SOAK_HOST).json
