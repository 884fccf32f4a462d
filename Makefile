# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
CONSOLE_VENDOR := src/agentgov/console/static/vendor

.PHONY: demo decisions test lint typecheck policy-test unit proto bench clean system-deps console-assets

decisions: $(STAMP)
	$(BIN)/agentgov demo --policies policies

$(STAMP): pyproject.toml $(CONSOLE_VENDOR)/.built
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Real OPA as the tests' Rego oracle (tests/opa_oracle.py). It declares Python >= 3.14 but works on
	# 3.11; a test-only dependency, pinned, never imported by agentgov itself.
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python opa-golib-python-bindings==0.4.4
	# xds-protos (Envoy's API) ships an older copy of OpenTelemetry's generated protobuf modules under the
	# same paths as opentelemetry-proto; the last installed wins, and the OTLP exporter needs the newer one.
	$(BIN)/pip install --quiet --force-reinstall --no-deps opentelemetry-proto==1.45.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The console's browser libraries (htmx, Chart.js), from npm at the versions console/package-lock.json
# pins, copied into the package so the wheel ships them and users need no build step.
console-assets: $(CONSOLE_VENDOR)/.built

$(CONSOLE_VENDOR)/.built: console/package.json console/package-lock.json
	@command -v npm >/dev/null || { echo "installing npm (Debian package) for the console's browser libraries"; \
		apt-get update -qq && apt-get install -y -qq nodejs npm; }
	cd console && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(CONSOLE_VENDOR)
	cp console/node_modules/htmx.org/dist/htmx.min.js console/node_modules/chart.js/dist/chart.umd.js $(CONSOLE_VENDOR)/
	cp console/node_modules/htmx.org/LICENSE $(CONSOLE_VENDOR)/htmx.LICENSE
	cp console/node_modules/chart.js/LICENSE.md $(CONSOLE_VENDOR)/chart.js.LICENSE.md
	touch $@

demo: $(STAMP)
	$(BIN)/agentgov up --policies policies

policy-test: $(STAMP)
	$(BIN)/agentgov check policies/
	$(BIN)/agentgov test policies/ --coverage --threshold 90

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests start real services themselves: redis-server (Debian package) for budgets shared by nodes.
system-deps:
	@command -v redis-server >/dev/null || { echo "installing redis-server (Debian package) for the budget tests"; \
		(apt-get update -qq && apt-get install -y -qq redis-server) || \
		{ echo "redis-server is needed by the tests: install it (apt-get install redis-server)"; exit 1; }; }
	@command -v docker-registry >/dev/null || { echo "installing docker-registry (Debian package) for the OCI bundle tests"; \
		(apt-get update -qq && apt-get install -y -qq docker-registry) || \
		{ echo "docker-registry is needed by the tests: install it (apt-get install docker-registry)"; exit 1; }; }
	@command -v promtool >/dev/null || { echo "installing prometheus (Debian package) for promtool, which checks the alert rules"; \
		(apt-get update -qq && apt-get install -y -qq prometheus) || \
		{ echo "promtool is needed by the tests: install it (apt-get install prometheus)"; exit 1; }; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { echo "installing chromium and chromium-driver (Debian packages) for the console's browser tests"; \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) || \
		{ echo "chromium is needed by the tests: install it (apt-get install chromium chromium-driver)"; exit 1; }; }
	@command -v git >/dev/null || { echo "installing git (Debian package) for the diff and CI-gate tests"; \
		(apt-get update -qq && apt-get install -y -qq git) || \
		{ echo "git is needed by the tests: install it (apt-get install git)"; exit 1; }; }

unit: $(STAMP) system-deps
	$(BIN)/python -m pytest

test: lint typecheck policy-test unit

# Measure speed (never asserted in tests): writes docs/benchmarks.md and docs/benchmarks.png.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the gateway benchmark"; \
		apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/run.py
	# Floors, agentgov over both transports, the full pipeline and LiteLLM (in bench/.litellm-venv).
	$(BIN)/python bench/gateway.py
	# What OpenTelemetry tracing costs a decision (off, 10%, 100% sampled).
	$(BIN)/python bench/tracing_cost.py
	# Load, reload, memory and decision time against the catalog's size (10 to 20,000 tools).
	$(BIN)/python bench/catalog_scale.py

# Regenerate the decision service's message classes after editing the .proto (tests check they match).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I src/agentgov/engine/proto --python_out=src/agentgov/engine/proto \
		--pyi_out=src/agentgov/engine/proto src/agentgov/engine/proto/agentgov/v1/decision.proto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
