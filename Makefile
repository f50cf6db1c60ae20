# microsandbox — run `make help` for the targets.
SHELL := /bin/bash
HOST_TRIPLE := x86_64-unknown-linux-gnu
# CI keeps the cargo target directory in a cache outside the clone (CARGO_TARGET_DIR, see .ci/run).
TARGET := $(abspath $(or $(CARGO_TARGET_DIR),target))
GUEST := $(TARGET)/$(HOST_TRIPLE)/release/microsandbox-guest
AGENT := $(TARGET)/release/microsandbox-agent
export MSB_GUEST_AGENT ?= $(GUEST)
export MSB_AGENT_BIN ?= $(TARGET)/debug/microsandbox-agent
export MSB_CLI_BIN ?= $(TARGET)/debug/msb

.PHONY: crash escape soak soak-operator fuzz fuzz-api help setup build guest agent demo demo-curl test test-python test-go test-node test-crds test-microvm test-helm crds lint unit integration bench bench-python bench-sdks bench-msx

help: ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## Install host packages (crun, registry, ...), start the test registry, build test images.
	bash scripts/setup.sh
	bash scripts/test-registry.sh start
	bash scripts/test-images.sh

guest: ## Build the static guest agent.
	RUSTFLAGS="-C target-feature=+crt-static" cargo build -p microsandbox-guest --release --target $(HOST_TRIPLE)

agent: guest ## Build the node agent (release) with the guest agent beside it.
	cargo build -p microsandbox-agent --release
	install -m 0755 $(GUEST) $(TARGET)/release/microsandbox-guest

build: agent ## Build everything.

demo: setup agent ## Run the SDK's hello example: it starts a local agent (if none runs) and runs Python in a sandbox.
	bash sdk/python/scripts/dev-setup.sh
	MSB_AGENT_BIN=$(AGENT) MSB_MIRRORS=docker.io=127.0.0.1:5000 sdk/python/.venv/bin/python sdk/python/examples/hello.py

demo-curl: setup agent ## The same through the raw HTTP API with curl.
	MSB_AGENT_BIN=$(AGENT) bash scripts/demo.sh

lint: ## rustfmt + clippy (warnings are errors).
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit: ## Unit tests (no root, no registry needed).
	cargo test --workspace --exclude microsandbox-e2e --lib --bins

integration: guest ## Integration tests against real crun sandboxes and the local registry (root).
	cargo test --workspace --exclude microsandbox-e2e --tests -- --test-threads=2

test: setup lint guest ## Everything CI runs: setup, lint, unit + integration tests, microVM runtime on real libkrun, CRDs, the cluster e2e on a real apiserver, Python, Go and Node.js SDK tests, a bounded API fuzzing run, the Helm e2e on a real node.
	cargo test --workspace --exclude microsandbox-e2e -- --test-threads=2
	@echo "== microVM boot e2e (runs where KVM can boot a guest; otherwise says why not):"
	cargo test -q -p microsandbox-agent --test microvm_boot -- --nocapture
	$(MAKE) -s test-microvm
	bash crds/tests/apiserver.sh
	bash tests/e2e/run.sh
	cargo build -p microsandbox-agent -p microsandbox-cli
	bash sdk/python/scripts/test.sh
	bash sdk/go/scripts/test.sh
	bash sdk/node/scripts/test.sh
	bash scripts/fuzz-api.sh 10
	bash scripts/fuzz.sh 10
	bash tests/e2e/helm/run.sh

crash: guest ## Crash at every step: MSB_CRASH_ROUNDS (100) rounds of kill -9 (agent, guest, crun) mid-operation, then nothing unclaimed.
	MSB_CRASH_ROUNDS=$(or $(MSB_CRASH_ROUNDS),100) cargo test -p microsandbox-agent --test crash -- --nocapture

soak: guest ## Soak: MSB_SOAK_CYCLES (10000) create/exec/file/remove cycles; fds, threads, mounts flat, RSS slope printed.
	MSB_SOAK_CYCLES=$(or $(MSB_SOAK_CYCLES),10000) cargo test -p microsandbox-agent --test soak -- --nocapture

soak-operator: guest ## Operator soak: MSB_OPERATOR_SOAK_OBJECTS (10000) Sandbox objects created and deleted on a real apiserver; fds, threads flat, RSS slopes printed.
	MSB_OPERATOR_SOAK_OBJECTS=$(or $(MSB_OPERATOR_SOAK_OBJECTS),10000) bash tests/e2e/run.sh operator_soak --nocapture

escape: guest ## Escape and reconnaissance tooling (kdigger, amicontained, classic breakouts) from inside, as a table.
	cargo test -p microsandbox-agent --test escape -- --nocapture

fuzz: ## cargo-fuzz targets (nightly, libFuzzer + ASan) for FUZZ_SECONDS each (60); corpus in fuzz/corpus.
	FUZZ_GROW=1 bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

fuzz-api: guest ## API fuzzing (schemathesis, every operation, stateful links) against a real agent; FUZZ_EXAMPLES per operation (200).
	cargo build -p microsandbox-agent
	bash scripts/fuzz-api.sh $(or $(FUZZ_EXAMPLES),200)

test-microvm: guest ## The microVM runtime on the real libkrun + libkrunfw (built/fetched and cached by scripts/libkrun.sh).
	L=$$(bash scripts/libkrun.sh --print-lib-dir) && MSB_LIBKRUN_DIR=$$L LD_LIBRARY_PATH=$$L \
	  cargo test -p microsandbox-agent --test microvm_real_libkrun -- --nocapture

test-e2e: guest ## Cluster e2e: operator + node-agents as host processes on a real kube-apiserver + etcd.
	bash tests/e2e/run.sh

test-helm: ## The user's path on a real one-node cluster built here: images -> helm install -> Sandbox -> SDK exec -> delete -> upgrade -> uninstall.
	bash tests/e2e/helm/run.sh

test-crds: ## The CRDs on a real kube-apiserver + etcd (built from Go modules, cached): examples accepted, bad specs rejected.
	bash crds/tests/apiserver.sh

crds: ## Regenerate crds/microsandbox.dev_crds.yaml and the chart's copy.
	cargo run -q -p microsandbox-crds --bin crdgen > crds/microsandbox.dev_crds.yaml
	cp crds/microsandbox.dev_crds.yaml charts/microsandbox/crds/microsandbox.dev_crds.yaml

test-python: guest ## Python SDK tests only (ruff, mypy, stubtest, pytest against a real agent).
	cargo build -p microsandbox-agent -p microsandbox-cli
	bash sdk/python/scripts/test.sh

test-node: guest ## Node.js SDK: native core, tsc --strict, node --test against a real agent, npm pack + install + example.
	cargo build -p microsandbox-agent
	bash sdk/node/scripts/test.sh

test-go: guest ## Go SDK: gofmt, go vet, staticcheck, go test against a real agent.
	cargo build -p microsandbox-agent
	bash sdk/go/scripts/test.sh

bench: setup agent ## Benchmarks (prints a table of ratios against baselines).
	bash bench/run.sh

bench-python: setup agent ## Python SDK exec overhead vs the Rust client (same run).
	bash sdk/python/bench/run.sh

bench-sdks: setup guest ## Every SDK's exec p50/p99, create -> first output, 64 MiB stream vs the Rust crate (same run).
	bash bench/sdks.sh

bench-msx: setup guest ## `msx python -c 'print(1)'` wall time vs `crun run` of the same rootfs (same run).
	bash bench/msx.sh
