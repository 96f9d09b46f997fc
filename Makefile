# postergenre: `make help` lists the targets. Everything installs into ./.venv from requirements/lock.txt (the
# dev lock: the production image's requirements/runtime.txt plus the dev and test tools).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements/lock.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	# test-only: the Lite0 parity test compares against PyTorch (pip takes the machine's local CPU wheel)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps efficientnet-lite-pytorch==0.1.0
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the locked dependencies and the project

# Runtime first: the dev lock is constrained to its pins. Existing pins are kept unless an input changed them.
lock: ## re-resolve requirements/runtime.in and dev.in into requirements/runtime.txt and lock.txt
	$(BIN)/uv pip compile -q requirements/runtime.in -o requirements/runtime.txt --python-version 3.11 --no-header
	$(BIN)/uv pip compile -q requirements/dev.in -o requirements/lock.txt --python-version 3.11 --no-header

demo: $(STAMP) ## run the main job on the embedded default (local store, SQLite, synthetic snapshot)
	$(BIN)/postergenre demo

test: $(STAMP) ## install and run the whole test suite (starts its own S3 server and PostgreSQL)
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest -q

airflow: $(STAMP) ## start Airflow locally (SQLite, LocalExecutor) with the project's DAGs; prints URL and login
	bash scripts/airflow-local.sh

lint: $(STAMP) ## ruff
	$(BIN)/ruff check postergenre tests dags plugins benchmarks

bench: $(STAMP) ## benchmarks: print side-by-side ratios
	$(BIN)/python -m benchmarks

.PHONY: help install lock demo test airflow lint bench
