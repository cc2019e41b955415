# The documented commands. `make demo` and `make test` are all a newcomer needs.
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup setup-broker setup-peers demo test test-rust test-cuda test-python lint bench clean

setup:            ## Python packages and the ONNX Runtime library (.venv)
	scripts/setup.sh

setup-broker:     ## setup + the Apache Kafka broker (Maven Central jars) for integration tests
	scripts/setup.sh --broker

setup-peers:      ## setup + .venv-peers: MLServer and the LiteLLM proxy the cloud worker tests talk to
	scripts/setup.sh --peers

demo: setup       ## whole pipeline end to end on an embedded Kafka
	@echo "demo: building switchyard (the first build compiles DataFusion, Arrow, librdkafka, OpenSSL bindings: about 45 min on 2 cores; seconds afterwards)"
	$(CARGO) build --bin switchyard
	$(CARGO) run --quiet --bin switchyard -- demo

test: setup-broker setup-peers lint test-rust test-cuda test-python   ## everything CI runs

test-rust:
	@echo "test: building and running every Rust test (a first build takes 45+ min on 2 cores)"
	$(CARGO) test --workspace --all-targets

test-cuda:        ## the CUDA build compiles, and falls back to the CPU without a CUDA runtime
	$(CARGO) clippy -p switchyard-workers --features cuda --all-targets -- -D warnings
	$(CARGO) test -p switchyard-workers --features cuda --lib -- onnx::

test-python:
	.venv/bin/python -m pytest -q pipelines

lint:
	python3 scripts/check_imports.py
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: setup-broker setup-peers  ## benchmarks (pipeline and baselines in one run); writes docs/BENCHMARKS.md
	$(CARGO) build --quiet
	.venv/bin/python scripts/bench.py

clean:
	rm -rf data target/tmp
