# PacketCapture API: `make help` lists the targets. The check targets are exactly what CI runs.
.DEFAULT_GOAL := help
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: demo
demo: ## Run the service against the embedded simulated cluster and download a capture
	bash scripts/demo.sh

.PHONY: build
build: ## Build every crate, tests included (debug)
	$(CARGO) build --workspace --all-targets --locked

.PHONY: release
release: ## Build the release binaries
	$(CARGO) build --workspace --release --locked

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: fmt-check
fmt-check: ## Check formatting (CI gate)
	$(CARGO) fmt --all --check

.PHONY: clippy
clippy: ## Lint, warnings as errors (CI gate)
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: unit
unit: ## Run every test (no format or lint gate); end-to-end tests run the built binary
	$(CARGO) build --locked -p packetcapture-api -p packetcapture-tests -p kubectl-packetcapture --bins
	$(CARGO) test --workspace --locked --no-fail-fast

.PHONY: domain-boundary
domain-boundary: ## Check the domain depends on no kube, warp, hyper or reqwest, and the CLI on no service crate
	@if $(CARGO) tree -p packetcapture-domain -e normal --prefix none --locked | grep -E '^(kube|warp|hyper|reqwest)[ -]'; then \
		echo "packetcapture-domain must not depend on these"; exit 1; else echo "domain boundary: ok"; fi
	@if $(CARGO) tree -p kubectl-packetcapture -e normal --prefix none --locked | grep -E '^packetcapture-'; then \
		echo "kubectl-packetcapture must depend on no service crate (it is a client of the HTTP API)"; exit 1; else echo "cli boundary: ok"; fi

.PHONY: layout-check
layout-check: ## Check the files of app/src and of the archive engine form a tree (no circle, no arrow back up)
	@python3 scripts/layout-check.py app/src domain/src/archive

.PHONY: tools
tools: ## Install what the tests use when missing (Debian packages, PyPI tools)
	bash scripts/test-tools.sh

.PHONY: openapi-check
openapi-check: ## Check app/src/openapi.json is what scripts/openapi.py writes
	@python3 scripts/openapi.py | diff -u app/src/openapi.json - && echo "openapi document: ok"

.PHONY: test
test: tools fmt-check clippy domain-boundary layout-check openapi-check unit ## Everything CI checks (tools first): format, lint, boundary, all tests

.PHONY: rss
rss: ## Peak RSS of streaming 4 GiB through the archive engine (needs /usr/bin/time)
	$(CARGO) build --release --locked -p packetcapture-domain --example stream_rss
	/usr/bin/time -v target/release/examples/stream_rss 4 2>&1 | grep -E 'streamed|Maximum resident'

.PHONY: bench
bench: ## Throughput, memory, latency and compression against kubectl (release build; prints a table)
	bash scripts/bench.sh

.PHONY: bench-follow
bench-follow: ## A running capture followed live: delay p50/p99 and CPU per 100k packets (release build; part of make bench)
	bash scripts/bench-follow.sh

.PHONY: bench-resume
bench-resume: ## A 4 GiB zip cut at 90% and resumed: time, bytes and CPU against a whole download (release build; part of make bench)
	bash scripts/bench-resume.sh

.PHONY: bench-load
bench-load: ## Hundreds of nodes and concurrent downloads: peak RSS, time, refusals, execs (release build; part of make bench)
	bash scripts/bench-load.sh

.PHONY: soak
soak: ## Mixed traffic, faults and a restart for SOAK_MINUTES (default 10) against the simulation; prints outcomes
	$(CARGO) build --release --locked -p packetcapture-api -p packetcapture-tests --bins
	target/release/packetcapture-soak --api target/release/packetcapture-api --minutes $${SOAK_MINUTES:-10}

.PHONY: image-check
image-check: ## Without a Docker engine: a static binary in an image FROM scratch (buildah), checked and run as UID 1001
	bash scripts/image-check.sh

.PHONY: image
image: ## Build the container image (needs a Docker engine)
	docker build -t packetcapture-api:dev .
