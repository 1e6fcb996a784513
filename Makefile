# kafka-upstream-wasm: the filter, host-sim and their tests.
#
#   make run    build everything and run the filter under host-sim
#   make test   every test: unit, host-sim on the real .wasm files, lint
#   make build  the filter .wasm (release) and the host-sim binary

CARGO      ?= cargo
WASM_DIR   := target/wasm32-wasip1/wasm
FILTER     := $(WASM_DIR)/kafka_upstream.wasm
HOST_SIM   := target/release/host-sim
# Every wasm32 package: the filter and each crate under test-filters/.
WASM_PKGS  := -p kafka-upstream $(shell awk -F'"' '/^name = /{print "-p " $$2; nextfile}' test-filters/*/Cargo.toml)

.PHONY: all build wasm host-sim run test unit lint fmt clean

all: build

build: wasm host-sim

# The filter and every test filter, for wasm32-wasip1 (rustup, or Debian's toolchain).
wasm:
	scripts/build-wasm.sh

host-sim:
	$(CARGO) build --release -p host-sim

# Until `host-sim serve` lands, the main job runs one sample request through the filter with a
# canned Kafka REST proxy answer and prints the transcript.
run: build
	$(HOST_SIM) run --profile envoy --filter $(FILTER) --config examples/config.json \
		--request examples/request.json --http-call-response examples/rest-proxy-response.json

test: wasm unit lint

# Native unit tests and the integration tests that drive the real .wasm files through host-sim.
unit: wasm
	$(CARGO) test --release

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --profile wasm --target wasm32-wasip1 $(WASM_PKGS) -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
