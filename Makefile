# Every setup step lives here: a fresh clone needs only `make demo` or `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
export NPSFLOW_CACHE ?= $(HOME)/.cache/npsflow
# kustomize for the Kubernetes manifests (deploy/k8s, tests/test_k8s_manifests.py): built from its pinned Go
# module by the machine's Go toolchain (the Go module proxy; no prebuilt binary is downloaded) into the venv.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := $(BIN)/kustomize
KUSTOMIZE_STAMP := $(VENV)/.kustomize-$(KUSTOMIZE_VERSION)
# axe-core for the accessibility tests (tests/test_a11y.py): pinned with its sha512 in tests/a11y/package-lock.json,
# installed by `npm ci` (integrity checked, no install scripts) into the git-ignored tests/a11y/node_modules.
AXE_DIR := tests/a11y
AXE_JS  := $(AXE_DIR)/node_modules/axe-core/axe.min.js

.PHONY: setup system-deps demo test test-fast test-faults test-fuzz bench soak kafka-jars kustomize axe lint clean distclean grafana-schema compose-secrets

# Debian packages, installed only when missing (the broker runs on Java 17; Maven fetches its jars;
# the browser tests drive Debian's chromium through its chromedriver, nothing downloads a browser; npm installs
# the pinned axe-core of the accessibility tests).
APT_PACKAGES := openjdk-17-jre-headless maven
APT_BROWSER  := chromium chromium-driver
APT_NODE     := nodejs npm

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

# the benchmarks' extra dependencies (the Quix Streams peer of bench/pipeline_throughput.py), never needed to run npsflow
$(BENCH_STAMP): $(STAMP) pyproject.toml requirements.lock
	$(BIN)/pip install -q -c requirements.lock -e '.[test,bench]'
	$(BIN)/pip check
	touch $(BENCH_STAMP)

$(KUSTOMIZE_STAMP): $(STAMP)
	@command -v go >/dev/null || { echo "Go is needed to build kustomize $(KUSTOMIZE_VERSION) (go install from the Go module proxy)" >&2; exit 1; }
	GOBIN=$(abspath $(BIN)) GOTOOLCHAIN=local go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	$(KUSTOMIZE) version | grep -qx '$(KUSTOMIZE_VERSION)'
	touch $(KUSTOMIZE_STAMP)

kustomize: $(KUSTOMIZE_STAMP)

$(AXE_JS): $(AXE_DIR)/package.json $(AXE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to install axe-core (make system-deps installs it)" >&2; exit 1; }
	cd $(AXE_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	test -f $(AXE_JS)
	touch $(AXE_JS)

axe: $(AXE_JS)

setup: system-deps $(STAMP) kafka-jars $(KUSTOMIZE_STAMP) $(AXE_JS)

system-deps:
	@MISSING=""; \
	if command -v java >/dev/null && command -v mvn >/dev/null && java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then \
		echo "java and maven: present"; \
	else \
		MISSING="$(APT_PACKAGES)"; \
	fi; \
	if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "chromium and chromedriver: present"; \
	else \
		MISSING="$$MISSING $(APT_BROWSER)"; \
	fi; \
	if command -v npm >/dev/null; then \
		echo "npm: present"; \
	else \
		MISSING="$$MISSING $(APT_NODE)"; \
	fi; \
	if [ -n "$$MISSING" ]; then \
		echo "installing$$MISSING from Debian"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $$MISSING; \
	fi

kafka-jars: system-deps $(STAMP)
	$(BIN)/python -c "from deploy.local.kafka import ensure_jars; print('kafka jars:', ensure_jars())"

demo: setup
	$(BIN)/npsflow demo

# the fault suite (tests/test_faults.py: broker restart, ClickHouse inserts failing, disk full; ~3 min per case) runs
# apart: `make test-faults` (it prints each case's numbers: detection, recovery, throughput)
test: setup
	$(BIN)/pytest -q -ra --durations=15 -m "not faults"

test-faults: setup
	$(BIN)/pytest -q -ra -rP -m faults

test-fast: $(STAMP) $(KUSTOMIZE_STAMP) $(AXE_JS)
	$(BIN)/pytest -q -m "not kafka"

# only the fuzz tests (they also run in test and test-fast, with the same fixed budget); deeper:
# NPSFLOW_FUZZ_SCALE=10 make test-fuzz, or other inputs: NPSFLOW_FUZZ_SEED=<n> make test-fuzz
test-fuzz: $(STAMP)
	$(BIN)/pytest -q -m fuzz

# regenerate the vendored Grafana JSON schemas (needs node + npm and the npm registry; the tests only read them)
grafana-schema:
	deploy/grafana/schema/generate.sh

bench: setup $(BENCH_STAMP)
	$(BIN)/python bench/pipeline_throughput.py
	$(BIN)/python bench/dispatch_throughput.py
	$(BIN)/python bench/dashboard_queries.py

# the soak (opt-in, never in `make test` or CI): an hour at half the measured maximum; CSV + PNG under bench/results/
SOAK_ARGS ?= --minutes 60
soak: setup $(BENCH_STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# deploy/compose.yaml's secrets: 32 random bytes (hex) per missing file, never overwriting one (deploy/secrets/README.md)
COMPOSE_SECRETS := npsflow_secret npsflow_internal_token clickhouse_npsflow_password clickhouse_reader_password grafana_admin_password

compose-secrets:
	@mkdir -p deploy/secrets && chmod 0700 deploy/secrets
	@for name in $(COMPOSE_SECRETS); do \
		f=deploy/secrets/$$name; \
		if [ -s "$$f" ]; then echo "$$f: kept"; else \
			$(PY) -c "import secrets, sys; sys.stdout.write(secrets.token_hex(32))" > "$$f" && chmod 0644 "$$f" && echo "$$f: created"; \
		fi; \
	done

clean:
	-$(BIN)/npsflow stack down
	rm -rf .npsflow

distclean: clean
	rm -rf $(VENV)
