# The front door. `make demo` and `make test` each work on a fresh machine: they install what is
# missing (apt, venv + pip, Kafka's jars from Maven Central) and start the local stack.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
AIOS    := $(BIN)/aios
EXTRAS  := dev,registry,vector,anthropic,mcp,a2a,s3
STAMP   := $(VENV)/.installed
# uv installs the versions locked in uv.lock (`make lock` re-resolves them); pinned for the same lock format.
UV_VERSION := 0.13.9
UV      := $(BIN)/uv
comma   := ,
JARS    := infra/kafka/lib/.resolved
CONNECT_JARS := infra/connect/lib/.resolved
REGISTRY := infra/schema-registry/bin/schema-registry
HELM_TOOLS := infra/helm/tools/bin/.built
TRANSCODER_SRC := connectors/history/transcoder
TRANSCODER := $(VENV)/.transcoder
export PATH := $(HOME)/.cargo/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install system demo model-check test test-unit test-integration lint typecheck audit lock bench up down clean go-tools

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

system: ## Install missing system packages (redis-server, Java 17, Maven, Python venv)
	@bash infra/install-system.sh

$(UV):
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"

# Exactly the versions in uv.lock (--frozen: never re-resolved here); --inexact keeps what is installed
# apart from the lock (the transcoder below).
$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(MAKE) --no-print-directory system
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --inexact $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e))
	@touch $@

lock: | $(UV) ## Re-resolve uv.lock after changing dependencies in pyproject.toml, then commit it
	$(UV) lock
	@echo "uv.lock updated: commit it with pyproject.toml (make install installs exactly what it pins)"

# The history sink's Avro → Native transcoder (Rust, pyo3), built by maturin with the crates pinned in Cargo.lock.
$(TRANSCODER): $(STAMP) $(wildcard $(TRANSCODER_SRC)/src/*.rs) $(addprefix $(TRANSCODER_SRC)/,Cargo.toml Cargo.lock pyproject.toml aios_transcoder.pyi)
	@command -v cargo >/dev/null || { echo "Rust's cargo is needed to build $(TRANSCODER_SRC): install it with rustup (https://rustup.rs)" >&2; exit 1; }
	$(BIN)/python -m pip install -q ./$(TRANSCODER_SRC)
	@touch $@

$(JARS): infra/kafka/pom.xml
	cd infra/kafka && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
	@touch $@

# Kafka Connect (worker + FileStream + JSON), same version as the broker, for the JSON bridges.
$(CONNECT_JARS): infra/connect/pom.xml
	cd infra/connect && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
	@touch $@

install: $(STAMP) $(TRANSCODER) $(JARS) $(CONNECT_JARS) ## Create the venv, install AIOS and its transcoder, resolve Kafka's and Connect's jars

# The Confluent-API schema registry the tests run against, built from the Go module proxy.
$(REGISTRY): infra/schema-registry/build.sh infra/schema-registry/go.mod infra/schema-registry/go.sum
	bash infra/schema-registry/build.sh

# helm v4 and manifestcheck (rendered manifests decoded strictly with the Kubernetes and KEDA Go
# types), built from the Go module proxy for tests/unit/test_helm.py.
$(HELM_TOOLS): infra/helm/tools/build.sh $(addprefix infra/helm/tools/,helm/go.mod helm/go.sum manifestcheck/go.mod manifestcheck/go.sum manifestcheck/main.go)
	bash infra/helm/tools/build.sh
	@touch $@

go-tools: $(REGISTRY) $(HELM_TOOLS) ## Build the Go tools the tests use (the schema registry, helm, manifestcheck)

up: install ## Start the local Kafka and Redis (idempotent)
	$(AIOS) dev up

down: ## Stop the local Kafka and Redis
	@test -x $(AIOS) && $(AIOS) dev down || true

demo: install ## Run a sample project through the embedded pipeline
	$(AIOS) demo

# Tests are isolated (a topic prefix, a data directory and free ports each), so they run in parallel;
# most of a test's time is spent waiting on brokers and servers, so more workers than cores pay.
TEST_WORKERS ?= 4

# The real embedding model the memory tests (and aios up's vector memory) run: ../shared beside the clone.
MODEL_DIR := ../shared/models/all-MiniLM-L6-v2-onnx

model-check:
	@test -f $(MODEL_DIR)/model.onnx || { echo "make test needs the ONNX embedding model at $(MODEL_DIR): put the shared folder (models/all-MiniLM-L6-v2-onnx) beside this clone, as CI does" >&2; exit 1; }

test: model-check install $(REGISTRY) $(HELM_TOOLS) ## Run every test against the real local Kafka, Redis, chdb, ClickHouse over HTTP and a schema registry
	$(AIOS) dev up
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-unit: install $(HELM_TOOLS) ## Only the pure-logic tests (no services)
	$(BIN)/pytest -q tests/unit

lint: install ## ruff, mypy --strict, the layer contract (import-linter) and the lock's audit
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@$(UV) lock --locked || { echo "uv.lock does not match pyproject.toml: run make lock and commit uv.lock" >&2; exit 1; }
	$(BIN)/python infra/audit_lock.py uv.lock

audit: install ## The locked versions against PyPI's advisory data (infra/audit_lock.py); part of lint
	$(BIN)/python infra/audit_lock.py uv.lock

typecheck: install ## mypy --strict
	$(BIN)/mypy

bench: up ## Benchmarks (figures go in docs/benchmarks.md)
	$(AIOS) topics create
	$(AIOS) bench pipeline --mode embedded
	$(AIOS) bench pipeline --mode distributed
	$(AIOS) bench capacity --mode embedded
	$(AIOS) bench capacity --mode distributed --queued 0
	$(AIOS) bench orchestrator
	$(AIOS) bench dag
	$(AIOS) bench router
	$(AIOS) bench sink
	$(AIOS) bench memory
	$(AIOS) bench api

clean: down ## Remove the venv, jars and local data
	rm -rf $(VENV) infra/kafka/lib infra/connect/lib infra/helm/tools/bin .aios-data
