# Every setup step lives here: a fresh clone needs only `make demo` or `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export NPSFLOW_CACHE ?= $(HOME)/.cache/npsflow

.PHONY: setup demo test test-fast bench kafka-jars lint clean distclean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) kafka-jars

kafka-jars: $(STAMP)
	$(BIN)/python -c "from deploy.local.kafka import ensure_jars; print('kafka jars:', ensure_jars())"

demo: setup
	$(BIN)/npsflow demo

test: setup
	$(BIN)/pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not kafka"

bench: setup
	$(BIN)/python bench/pipeline_throughput.py

clean:
	-$(BIN)/npsflow stack down
	rm -rf .npsflow

distclean: clean
	rm -rf $(VENV)
