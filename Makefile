# crm-genesys: `make demo` runs the sync on the embedded defaults, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export CRM_GENESYS_DATA_DIR ?= $(CURDIR)/.crm_genesys

.PHONY: venv demo dev test lint typecheck pytest bench emulator clean

# The venv is (re)built from the pins whenever pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,postgres,celery]'
	@touch $(STAMP)

venv: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: venv $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/crm-genesys demo

dev: venv $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev -w workspace.yaml --host 127.0.0.1 --port 3000

emulator: venv
	$(BIN)/crm-genesys emulator serve --data $(CRM_GENESYS_DATA_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest -n 2

test: lint typecheck pytest

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .dagster_home .crm_genesys .pytest_cache .mypy_cache .ruff_cache
