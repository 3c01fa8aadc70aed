# crm-genesys: `make demo` runs the sync on the embedded defaults, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export CRM_GENESYS_DATA_DIR ?= $(CURDIR)/.crm_genesys
# `make prod`: its own instance, data and PostgreSQL under PROD_DIR (see docs/DEPLOY.md).
PROD_DIR ?= $(CURDIR)/.prod

.PHONY: venv demo dev prod celery-worker test lint typecheck pytest bench chaos emulator clean

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

# The UI over the demo's instance, with the demo's partitions (they start where its data does,
# unless CRM_GENESYS_PARTITION_START is set). `exec` through a wrapper that restores the default
# SIGINT/SIGTERM dispositions (a shell started in the background ignores SIGINT, and dagster dev
# inherits that): Ctrl-C and SIGTERM stop it and its webserver and daemon.
dev: venv $(DAGSTER_HOME)/dagster.yaml
	@start="$${CRM_GENESYS_PARTITION_START:-$$($(BIN)/crm-genesys crm first-window)}"; \
	export CRM_GENESYS_PARTITION_START="$$start"; \
	echo "Dagster UI on http://127.0.0.1:3000 (windows from $${start:-the default start})"; \
	exec $(BIN)/python -c 'import os, signal, sys; \
	    [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; \
	    os.execv(sys.argv[1], sys.argv[1:])' \
	    $(BIN)/dg dev -w workspace.yaml --host 127.0.0.1 --port 3000

# Webserver + daemon over PostgreSQL, queued runs, run monitoring; Ctrl-C or SIGTERM stops it all.
# Without CRM_DATABASE_URL it syncs a demo CRM of its own (generated once under PROD_DIR).
prod: venv
	@if [ -z "$$CRM_DATABASE_URL" ] && [ ! -f $(PROD_DIR)/data/demo_crm.sqlite ]; then \
	    CRM_GENESYS_DATA_DIR=$(PROD_DIR)/data $(BIN)/crm-genesys crm generate; fi
	DAGSTER_HOME=$(PROD_DIR)/dagster_home CRM_GENESYS_DATA_DIR=$(PROD_DIR)/data \
	CRM_GENESYS_PROD_DIR=$(PROD_DIR) $(BIN)/python -m deploy.supervise

# A Celery worker for CRM_GENESYS_EXECUTOR=celery (docs/DEPLOY.md): run it with the environment of
# the code location plus CELERY_BROKER_URL and CELERY_RESULT_BACKEND; one per machine, or more
# with distinct CELERY_WORKER_NAMEs.
CELERY_WORKER_NAME ?= crm-genesys
celery-worker: venv
	$(BIN)/celery -A dagster_celery.app worker -Q dagster --prefetch-multiplier=1 \
	    --loglevel=INFO -n $(CELERY_WORKER_NAME)@%h

emulator: venv
	$(BIN)/crm-genesys emulator serve --data $(CRM_GENESYS_DATA_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest -n 2 --durations=15

test: lint typecheck pytest

bench: venv
	$(BIN)/python -m benchmarks

# The long seeded chaos run (docs/RELIABILITY.md); CHAOS_ARGS overrides its size, e.g.
# CHAOS_ARGS="--contacts 5000 --windows 8 --kills 10 --seed 2".
CHAOS_ARGS ?= --contacts 50000 --windows 20 --kills 10 --seed 1
chaos: venv
	$(BIN)/python -m crm_genesys_tests.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .dagster_home .crm_genesys .prod .pytest_cache .mypy_cache .ruff_cache
