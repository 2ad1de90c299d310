# The one command surface. People, GitHub Actions and Jenkins all call these targets.
# `make help` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION ?= 0.13.8
VENV := .venv
BIN := $(VENV)/bin
# Use uv from PATH when there is one; otherwise bootstrap a private copy into .uv/.
UV := $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
CONTAINER_TOOL ?= docker
IMAGE ?= tabular-mlops-serving
IMAGE_TAG ?= latest
MODEL_DIR ?= models/export
PYTEST_ARGS ?=

export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export GIT_PYTHON_REFRESH := quiet

.PHONY: help env run repro test test-unit test-integration test-serving test-ci lint format \
        ingest validate preprocess train evaluate export gate infer-contract \
        register promote rollback ui serve image image-test push-image \
        bench-pipeline bench-model bench-serve ci clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_ -]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# ---------------------------------------------------------------- environment
$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	@touch $@

env: $(VENV)/.installed ## Create or update the pinned environment in .venv (uv, from uv.lock)

# ---------------------------------------------------------------- the pipeline
run: env ## Run the whole pipeline on the default data (dvc repro) and say where the results are
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.summary

repro: env ## dvc repro: rerun only the stages whose inputs changed
	$(BIN)/dvc repro

ingest validate preprocess train evaluate export: env ## Run a DVC stage and what it needs
	$(BIN)/dvc repro $@

gate: env ## Bring the pipeline up to date, then always re-check the gate (the champion may have moved)
	$(BIN)/dvc repro export
	$(BIN)/dvc repro --force --single-item gate

infer-contract: env ## Draft a data contract from data.source: make infer-contract TARGET=col OUT=path
	$(BIN)/python -m pipeline.validate infer --params params.yaml --target $(TARGET) --out $(or $(OUT),data/contract.inferred.yaml)

# ---------------------------------------------------------------- tests and checks
test: env ## Run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: env ## Unit tests only (fast)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: env ## Integration tests: real dvc repro in a temporary copy
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: env ## ruff on the code
	$(BIN)/ruff check pipeline serving tests benchmarks
	$(BIN)/ruff format --check pipeline serving tests benchmarks

format: env ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix pipeline serving tests benchmarks
	$(BIN)/ruff format pipeline serving tests benchmarks

bench-pipeline: env ## Time a clean dvc repro, a no-op rerun and a params change (fresh clone)
	$(BIN)/python -m benchmarks.bench_pipeline $(if $(ESTIMATOR),--estimator $(ESTIMATOR))

clean: ## Remove the environment, pipeline outputs and the local MLflow store
	rm -rf $(VENV) .uv mlruns .pytest_cache .ruff_cache
