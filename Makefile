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

# DVC stages call `python -m pipeline.<stage>`: that must be the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL := 2
export GIT_PYTHON_REFRESH := quiet

.PHONY: help env run repro test test-unit test-integration test-serving test-ci lint format \
        ingest validate preprocess train evaluate export gate infer-contract \
        register promote rollback ui serve image image-test push-image \
        bench-pipeline bench-model bench-serve ci clean system-deps dvc mlflow test-readme ci-act \
        jenkins-lint-deps

help: ## List the targets
	@grep -hE '^[a-zA-Z_ -]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# ---------------------------------------------------------------- environment
$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode
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

# ---------------------------------------------------------------- model registry and MLflow UI
# REASON is read from the environment by the recipe, so any text is safe: make promote REASON="..."
register: env ## Register the gated export as a new version (alias challenger); refuses a failed gate
	$(BIN)/python -m pipeline.registry register --params params.yaml --model-dir $(MODEL_DIR) \
	  --gate reports/gate.json --dvc-lock dvc.lock

promote: env ## Move @champion to VERSION (default: @challenger): make promote [VERSION=n] [REASON=...]
	$(BIN)/python -m pipeline.registry promote --params params.yaml \
	  $(if $(VERSION),--version $(VERSION)) --reason "$${REASON:-}"

rollback: env ## Move @champion back to the previous champion: make rollback [REASON=...]
	$(BIN)/python -m pipeline.registry rollback --params params.yaml --reason "$${REASON:-}"

ui: env ## MLflow UI on the project's store at http://127.0.0.1:5000 (make ui UI_PORT=5001)
	$(BIN)/python -m pipeline.ui --host 127.0.0.1 --port $(or $(UI_PORT),5000)

# ---------------------------------------------------------------- tests and checks
test: env system-deps jenkins-lint-deps ## Run the whole test suite (installs the system tools it drives first)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ci-act: env system-deps ## Run the GitHub workflows with act, offline, against a registry on 127.0.0.1 (minutes)
	$(BIN)/python -m pytest tests/ci/act -m act $(PYTEST_ARGS)

# npm-groovy-lint, pinned by tests/ci/jenkins/package-lock.json: the Groovy parser of the
# Jenkinsfile test (needs node, npm and Java 17: system-packages.txt).
JENKINS_LINT := tests/ci/jenkins/node_modules/.installed
$(JENKINS_LINT): tests/ci/jenkins/package.json tests/ci/jenkins/package-lock.json | system-deps
	npm ci --prefix tests/ci/jenkins --no-audit --no-fund --loglevel=error
	@touch $@

jenkins-lint-deps: $(JENKINS_LINT) ## Install npm-groovy-lint for the Jenkinsfile parse test

test-readme: env system-deps ## Run the README's shell commands as written, in a fresh clone (minutes)
	$(BIN)/python -m pytest tests/readme -m readme $(PYTEST_ARGS)

system-deps: ## Install the system tools the tests drive (system-packages.txt) when missing
	@scripts/system-deps.sh system-packages.txt

# DVC and MLflow Projects run each stage's `python -m ...` through the shell, which finds the
# first `python` on PATH; this Makefile puts .venv/bin first, so run them through these.
dvc: env ## Run DVC in the project's environment: make dvc ARGS="exp run -S train.estimator=random_forest"
	$(BIN)/dvc $(ARGS)

mlflow: env ## Run the MLflow CLI in the project's environment: make mlflow ARGS="run . -e train ..."
	$(BIN)/mlflow $(ARGS)

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

bench-model: export ## Latency of the native model vs its ONNX export: one row and 1,000 rows
	$(BIN)/python -m benchmarks.bench_model --params params.yaml --train-dir models/train \
	  --preprocessor models/preprocess/preprocessor.joblib --model-dir $(MODEL_DIR) \
	  --test data/processed/test.parquet

# ---------------------------------------------------------------- serving
SERVE_PORT ?= 8000
# Empty: the server reports the ONNX file's hash as the model version.
MODEL_VERSION ?=
BENCH_SERVE_ARGS ?=

serve: env ## Serve MODEL_DIR with gunicorn on 127.0.0.1:SERVE_PORT (SERVING_* variables apply)
	@test -f $(MODEL_DIR)/model.json || test -n "$${SERVING_MODEL_URI:-}" || \
	  { echo "serve: no $(MODEL_DIR)/model.json; run the pipeline (make run) or set MODEL_DIR"; exit 1; }
	SERVING_MODEL_DIR=$(MODEL_DIR) SERVING_BIND=$${SERVING_BIND:-127.0.0.1:$(SERVE_PORT)} \
	  $(BIN)/gunicorn -c serving/gunicorn.conf.py 'serving.app:create_app()'

image: ## Build the serving image IMAGE:IMAGE_TAG with MODEL_DIR baked in (CONTAINER_TOOL)
	@test -f $(MODEL_DIR)/model.json || \
	  { echo "image: no $(MODEL_DIR)/model.json; run the pipeline (make run) first"; exit 1; }
	@# The image reports MODEL_VERSION; by default the registry version of this export, if any
	@# (after `make register`), else the server falls back to the ONNX file's hash.
	version='$(MODEL_VERSION)'; \
	if [ -z "$$version" ] && [ -x $(BIN)/python ]; then \
	  version=$$($(BIN)/python .github/scripts/model_version.py --model-dir $(MODEL_DIR) \
	    2>/dev/null) || version=''; \
	fi; \
	$(CONTAINER_TOOL) build -t $(IMAGE):$(IMAGE_TAG) -f serving/Dockerfile \
	  --build-arg MODEL_DIR=$(MODEL_DIR) $${version:+--build-arg MODEL_VERSION=$$version} .

image-test: image env ## Build and run the image; check health, non-root user, golden and bad requests
	$(BIN)/python -m tests.serving.image_smoke --tool $(CONTAINER_TOOL) \
	  --image $(IMAGE):$(IMAGE_TAG) --model-dir $(MODEL_DIR)

bench-serve: export ## wrk: our server vs mlflow models serve (1 and 100 rows), 60 s soak, time to ready
	$(BIN)/python -m benchmarks.bench_serve --model-dir $(MODEL_DIR) $(BENCH_SERVE_ARGS)

test-serving: env ## Serving tests: Flask test client, real gunicorn, registry reload
	$(BIN)/python -m pytest tests/serving $(PYTEST_ARGS)

clean: ## Remove the environment, pipeline outputs and the local MLflow store
	rm -rf $(VENV) .uv mlruns .pytest_cache .ruff_cache

# ---------------------------------------------------------------- CI/CD
# What CI runs before it publishes anything, in this order. .github/workflows/ci.yml and the
# Jenkinsfile call these same targets, one per step; tests/ci checks that the three agree.
CI_STEPS := env lint test ci-dvc-pull repro gate ci-report register image image-test
# The revision `ci-report` compares metrics and plots with (a PR's base); HEAD when empty.
CI_BASE ?=

# CI secrets that are not set arrive as empty variables: an empty MLFLOW_TRACKING_URI means the
# embedded store, exactly as if it were unset.
ifeq ($(strip $(MLFLOW_TRACKING_URI)),)
unexport MLFLOW_TRACKING_URI
endif

.PHONY: ci-dvc-pull ci-dvc-push ci-report ci-comment retag-image

ci: ## Run, in order, what CI runs before publishing (CI_STEPS); stops at the first failure
	@for step in $(CI_STEPS); do echo "==> make $$step"; $(MAKE) --no-print-directory $$step; done

test-ci: env jenkins-lint-deps ## Static checks of the CI definitions: actionlint, hadolint, structure
	$(BIN)/python -m pytest tests/ci $(PYTEST_ARGS)

ci-dvc-pull: env ## Fetch the DVC remote's cache and run cache, when a remote is configured
	@if [ -n "$$($(BIN)/dvc remote list)" ]; then $(BIN)/dvc pull --run-cache --allow-missing; \
	else echo "ci-dvc-pull: no DVC remote configured; nothing to pull"; fi

ci-dvc-push: env ## Push the DVC cache and run cache to the DVC remote, when one is configured
	@if [ -n "$$($(BIN)/dvc remote list)" ]; then $(BIN)/dvc push --run-cache; \
	else echo "ci-dvc-push: no DVC remote configured; nothing to push"; fi

ci-report: env ## Write reports/ci/: metrics diff against CI_BASE, gate report, plots diff
	.github/scripts/ci-report.sh $(BIN)/dvc reports/ci $(CI_BASE)

ci-comment: ## Post or update the one report comment on pull request PR_NUMBER (gh, GH_TOKEN)
	.github/scripts/pr-comment.sh reports/ci/comment.md

push-image: env ## Push IMAGE:IMAGE_TAG, also as IMAGE:model-<registry version> (REGISTRY_USER/PASSWORD)
	@version=$$($(BIN)/python .github/scripts/model_version.py --model-dir $(MODEL_DIR)); \
	CONTAINER_TOOL=$(CONTAINER_TOOL) .github/scripts/image.sh push $(IMAGE) $(IMAGE_TAG) model-$$version

retag-image: env ## Point IMAGE:champion at the image of the registry's @champion version
	@version=$$($(BIN)/python .github/scripts/model_version.py --alias champion); \
	CONTAINER_TOOL=$(CONTAINER_TOOL) .github/scripts/image.sh retag $(IMAGE) model-$$version champion
