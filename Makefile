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
# Processes `make test` spreads the suite over (pytest-xdist): most tests use one core, and a
# test file stays in one process, so its fixtures are built once. TEST_WORKERS=1: serial.
TEST_WORKERS ?= 2

# DVC stages call `python -m pipeline.stages.<stage>`: that must be the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)
# TensorFlow's C++ log (absl) at 3, ERROR and below hidden: at 2 every Keras train printed
# `E0000 ... node_def_util.cc ... NodeDef mentions attribute use_unbounded_threadpool`, TF's own
# note that a tf.data graph attribute is ignored, which is no error. Our stages' failures are
# Python errors and still print. TF_CPP_MIN_LOG_LEVEL=0 make train shows TF's full log.
TF_CPP_MIN_LOG_LEVEL ?= 3
export TF_CPP_MIN_LOG_LEVEL
export GIT_PYTHON_REFRESH := quiet

.PHONY: help env run repro test test-unit test-integration test-serving test-ci lint format \
        ingest validate preprocess train evaluate export gate infer-contract \
        register promote rollback ui serve image image-test push-image \
        bench-pipeline bench-validate bench-model bench-serve bench-serve-log bench-serve-loop compare ci clean system-deps dvc mlflow \
        test-readme ci-act jenkins-lint-deps

# In the Makefile's order (related targets stay together); coloured only on a terminal.
help: ## List the targets
	@if [ -t 1 ]; then on=$$'\033[36m' off=$$'\033[0m'; else on='' off=''; fi; \
	grep -hE '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "}; {printf "  %s%-16s%s %s\n", on, $$1, off, $$2}'

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

# TARGET and OUT reach the recipe through the environment, so a column name with spaces or
# quotes is one argument: make infer-contract TARGET="had affair"
infer-contract: export INFER_TARGET = $(TARGET)
infer-contract: export INFER_OUT = $(or $(OUT),data/contract.inferred.yaml)
infer-contract: env ## Draft a data contract from data.source: make infer-contract TARGET=col OUT=path [FORCE=1 to replace OUT]
	$(BIN)/python -m pipeline.stages.validate infer --params params.yaml --target "$$INFER_TARGET" --out "$$INFER_OUT" $(if $(FORCE),--force)

# ---------------------------------------------------------------- model registry and MLflow UI
register: env ## Register the gated export as a new version (alias challenger); refuses a failed gate
	$(BIN)/python -m pipeline.registry register --params params.yaml --model-dir $(MODEL_DIR) \
	  --gate reports/gate.json --dvc-lock dvc.lock

# VERSION and REASON reach the command through the environment, unexpanded ($(value ...)):
# any text is safe, quotes and a "$" included.
promote: export PROMOTE_VERSION = $(value VERSION)
promote: export PROMOTE_REASON = $(value REASON)
promote: env ## Move @champion to VERSION (default: @challenger): make promote [VERSION=n] [REASON=...] [FORCE=1]
	$(BIN)/python -m pipeline.registry promote --params params.yaml \
	  $${PROMOTE_VERSION:+--version "$$PROMOTE_VERSION"} --reason "$${PROMOTE_REASON:-}" \
	  $(if $(FORCE),--force)

rollback: export PROMOTE_REASON = $(value REASON)
rollback: env ## Move @champion back to the previous champion: make rollback [REASON=...]
	$(BIN)/python -m pipeline.registry rollback --params params.yaml --reason "$${PROMOTE_REASON:-}"

ui: env ## MLflow UI on the project's store at http://127.0.0.1:5000 (make ui UI_PORT=5001)
	$(BIN)/python -m pipeline.ui --host 127.0.0.1 --port $(or $(UI_PORT),5000)

# ---------------------------------------------------------------- tests and checks
test: env system-deps jenkins-lint-deps ## Run the whole test suite (installs the system tools it drives first)
	$(BIN)/python -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

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
	$(BIN)/ruff check pipeline serving model_spec tests benchmarks
	$(BIN)/ruff format --check pipeline serving model_spec tests benchmarks

format: env ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix pipeline serving model_spec tests benchmarks
	$(BIN)/ruff format pipeline serving model_spec tests benchmarks

bench-pipeline: env ## Time a clean dvc repro, a no-op rerun and a params change (fresh clone)
	$(BIN)/python -m benchmarks.bench_pipeline $(if $(ESTIMATOR),--estimator $(ESTIMATOR))

bench-validate: env ## Time validate on a generated 200-column x 10,000-row table (GX + Data Docs)
	$(BIN)/python -m benchmarks.bench_validate $(BENCH_VALIDATE_ARGS)

# Minutes per pair (a full pipeline each), so not part of `make test`.
CHECK_ESTIMATORS_ARGS ?=
.PHONY: check-estimators
check-estimators: env ## Every estimator x table it supports, in a clone: dvc exp run, gate, make serve, golden /predict
	$(BIN)/python -m benchmarks.check_estimators $(CHECK_ESTIMATORS_ARGS)

bench-model: env ## Latency of every estimator x task, native model vs its ONNX graph: one row and 1,000 rows
	$(BIN)/python -m benchmarks.bench_model --params params.yaml

# ---------------------------------------------------------------- serving
SERVE_PORT ?= 8000
# Empty: the server reports the ONNX file's hash as the model version.
MODEL_VERSION ?=
BENCH_SERVE_ARGS ?=

# What to serve: SERVING_MODEL_URI if set, else MODEL_DIR if it holds an export, else the
# registry's @champion (pipeline.registry serve-source prints the settings and says which).
serve: env ## Serve MODEL_DIR (no export there: the registry's @champion) on 127.0.0.1:SERVE_PORT (granian + Flask)
	@settings=$$($(BIN)/python -m pipeline.registry serve-source --params params.yaml \
	  --model-dir $(MODEL_DIR)); \
	eval "export $$settings"; \
	SERVING_BIND=$${SERVING_BIND:-127.0.0.1:$(SERVE_PORT)} \
	  exec $(BIN)/python -m serving.server

image: ## Build the serving image IMAGE:IMAGE_TAG with MODEL_DIR baked in (CONTAINER_TOOL)
	@test -f $(MODEL_DIR)/model.json || \
	  { echo "image: no $(MODEL_DIR)/model.json; run the pipeline (make run) first"; exit 1; }
	@# The build context holds only exports under models/ (.dockerignore).
	@case "$(MODEL_DIR)" in models/*|./models/*) ;; *) \
	  echo "image: MODEL_DIR must be a directory under models/ in this repository (the image's build context, see .dockerignore), not $(MODEL_DIR)"; exit 1;; esac
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

bench-serve-log: export ## The prediction log's cost: log off, on, on for every row, in 20 rotating 3 s one-row runs
	$(BIN)/python -m benchmarks.bench_serve --model-dir $(MODEL_DIR) --log-cost 20 --seconds 3 $(BENCH_SERVE_ARGS)

bench-serve-loop: export ## SERVING_LOOP uvloop against asyncio: 20 rotating 3 s one-row runs
	$(BIN)/python -m benchmarks.bench_serve --model-dir $(MODEL_DIR) --loop-cost 20 --seconds 3 $(BENCH_SERVE_ARGS)

PREDICTION_LOG ?= $(SERVING_PREDICTION_LOG)
FEEDBACK_LOG ?= $(SERVING_FEEDBACK_LOG)
compare: env ## Champion vs challenger from PREDICTION_LOG (and FEEDBACK_LOG): agreement, latency, metric with a 95% CI
	@test -n "$(PREDICTION_LOG)" || { echo "compare: set PREDICTION_LOG=path (the server's SERVING_PREDICTION_LOG)"; exit 1; }
	$(BIN)/python -m serving.compare --log $(PREDICTION_LOG) $(if $(FEEDBACK_LOG),--feedback $(FEEDBACK_LOG))

test-serving: env ## Serving tests: Flask test client, real server processes, registry reload
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
	@# Without credentials (a fork's pull request gets no secrets) a failed pull is not fatal:
	@# the pipeline then runs from scratch, as it does with no remote.
	@if [ -n "$$($(BIN)/dvc remote list)" ]; then \
	  $(BIN)/dvc pull --run-cache --allow-missing || { \
	    if [ -z "$${AWS_ACCESS_KEY_ID:-}" ]; then \
	      echo "ci-dvc-pull: the DVC remote could not be read and no credentials are set (a fork's pull request?); running without its cache"; \
	    else exit 1; fi; }; \
	else echo "ci-dvc-pull: no DVC remote configured; nothing to pull"; fi

# deploy/run_cache.py first records the run-cache entries DVC skips (stages with `cache: false`
# outputs, e.g. evaluate) and pushes their outputs, which `dvc push --run-cache` leaves out, so a
# clone's `dvc repro --pull` restores train and evaluate. gate is never reused: it reads @champion.
RUN_CACHE := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))deploy/run_cache.py
ci-dvc-push: env ## Push the DVC cache and run cache to the DVC remote, when one is configured
	@if [ -n "$$($(BIN)/dvc remote list)" ]; then \
	  $(BIN)/python $(RUN_CACHE) push --skip gate && $(BIN)/dvc push --run-cache; \
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

# ---------------------------------------------------------------- monitoring
# The monitor step reads the prediction and feedback logs in monitor.log_dir (params.yaml) and
# writes reports/monitoring/ (summary.json, report.html, and a `retrain` file when drift is
# found). PUSHGATEWAY: push its numbers for the alert rules; PREDICTION_LOG_URI: where CI fetches
# the team's logs from (any fsspec directory URL).
PUSHGATEWAY ?=
PREDICTION_LOG_URI ?=
PROMTOOL ?= promtool

.PHONY: monitor monitor-fetch monitor-push monitor-flag retrain test-monitoring bench-monitor \
        monitoring-rules

monitor: env ## Drift, volume and live metric of the logged predictions -> reports/monitoring/
	@log_dir=$$($(BIN)/python -c 'from pipeline.config import load_params; print(load_params().monitor.log_dir)'); \
	test -d "$$log_dir" || { echo "monitor: no $$log_dir/ with the server's logs (SERVING_PREDICTION_LOG); \
	copy them there or run make monitor-fetch PREDICTION_LOG_URI=..."; exit 1; }
	$(BIN)/dvc repro monitoring/dvc.yaml

monitor-fetch: env ## Copy the team's prediction/feedback logs from PREDICTION_LOG_URI into monitor.log_dir
	@test -n "$(PREDICTION_LOG_URI)" || { echo "monitor-fetch: set PREDICTION_LOG_URI"; exit 1; }
	$(BIN)/python -m pipeline.stages.monitor fetch --uri "$(PREDICTION_LOG_URI)" \
	  --dest "$$($(BIN)/python -c 'from pipeline.config import load_params; print(load_params().monitor.log_dir)')"

monitor-push: env ## Push reports/monitoring/summary.json to PUSHGATEWAY (monitor_* metrics)
	@test -n "$(PUSHGATEWAY)" || { echo "monitor-push: set PUSHGATEWAY (e.g. http://127.0.0.1:9091)"; exit 1; }
	$(BIN)/python -m pipeline.stages.monitor push --summary reports/monitoring/summary.json \
	  --pushgateway "$(PUSHGATEWAY)"

monitor-flag: ## Print retrain=true|false from the last monitor run (also to $GITHUB_OUTPUT in Actions)
	@if [ -f reports/monitoring/retrain ]; then flag=true; else flag=false; fi; \
	echo "retrain=$$flag"; if [ -n "$${GITHUB_OUTPUT:-}" ]; then echo "retrain=$$flag" >> "$$GITHUB_OUTPUT"; fi

retrain: env ## Rerun every stage (re-ingests data.source, which DVC cannot see change), then gate
	$(BIN)/dvc repro --force
	$(BIN)/dvc repro --force --single-item gate

monitoring-rules: ## promtool: check and unit-test the Prometheus rules in monitoring/prometheus/
	@command -v $(PROMTOOL) >/dev/null || { echo "monitoring-rules: $(PROMTOOL) is not installed;" \
	  "\`make system-deps\` installs it (Debian's prometheus package)." >&2; exit 2; }
	$(PROMTOOL) check rules monitoring/prometheus/rules.yml
	cd monitoring/prometheus && $(PROMTOOL) test rules tests.yml tests-slow-clock.yml

test-monitoring: env ## Monitoring tests: the monitor, promtool, real Prometheus + server + pushgateway
	$(BIN)/python -m pytest tests/monitoring $(PYTEST_ARGS)

bench-monitor: env ## Time the monitor on 100,000 logged predictions of the default data
	$(BIN)/python -m benchmarks.bench_monitor --params params.yaml --rows 100000 \
	  $(if $(EVIDENTLY_PYTHON),--evidently-python $(EVIDENTLY_PYTHON))

# ---------------------------------------------------------------- the team stack (deploy/)
# PostgreSQL + an S3 server + the MLflow server on 127.0.0.1, state in TEAM_DIR (git-ignored).
# deploy/compose.yaml describes the same services for Docker; README "Working as a team".
TEAM_DIR ?= .team

.PHONY: team-up team-down team-clean team-env team-dvc-remote test-team

team-up: env ## Start the local team stack (PostgreSQL, S3, MLflow server); idempotent
	$(BIN)/python -m deploy.stack up --dir $(TEAM_DIR)

team-down: env ## Stop every process of the team stack; keeps its data in TEAM_DIR; idempotent
	$(BIN)/python -m deploy.stack down --dir $(TEAM_DIR)

team-clean: env ## Stop the team stack and delete its data (TEAM_DIR)
	$(BIN)/python -m deploy.stack down --dir $(TEAM_DIR) --purge

team-env: env ## Print the variables a teammate exports: eval "$$(make -s team-env)"
	@$(BIN)/python -m deploy.stack env --dir $(TEAM_DIR)

# Writes .dvc/config.local (not committed): the endpoint is this machine's; keys come from the
# AWS_* variables `make team-env` exports.
team-dvc-remote: env ## Point this clone's DVC remote at the team stack's S3 bucket (TEAM_S3_ENDPOINT)
	@test -n "$${TEAM_S3_ENDPOINT:-}" || { echo 'team-dvc-remote: run eval "$$(make -s team-env)" first'; exit 1; }
	$(BIN)/dvc remote add --local --force --default team $${TEAM_DVC_REMOTE_URL:-s3://dvc/store}
	$(BIN)/dvc remote modify --local team endpointurl $$TEAM_S3_ENDPOINT

test-team: env ## The team stack test: PostgreSQL, S3, MLflow server, two clones, serving (minutes)
	$(BIN)/python -m pytest tests/team $(PYTEST_ARGS)

# ---------------------------------------------------------------- Kubernetes (deploy/k8s/)
# CI calls `make deploy` after pushing the image and `make deploy-champion` after a promotion;
# both do nothing, successfully, when neither KUBE_CONFIG (the kubeconfig's contents, a CI
# secret) nor KUBECONFIG (a path, e.g. Jenkins' file credential) is set.
K8S_OVERLAY ?= deploy/k8s/overlays/directory
# sha256:... of the image to roll out; by default looked up for IMAGE:IMAGE_TAG.
DIGEST ?=

.PHONY: deploy deploy-champion k8s-render test-deploy

deploy: ## Apply K8S_OVERLAY with IMAGE pinned to its digest and wait for the rollout (KUBE_CONFIG)
	@if [ -z "$${KUBE_CONFIG:-}$${KUBECONFIG:-}" ]; then echo "deploy: KUBE_CONFIG is not set; no cluster to deploy to, skipping"; exit 0; fi; \
	digest='$(DIGEST)'; [ -n "$$digest" ] || digest=$$(CONTAINER_TOOL=$(CONTAINER_TOOL) deploy/k8s/deploy.sh digest $(IMAGE):$(IMAGE_TAG)); \
	KUBECTL=$${KUBECTL:-$(abspath $(BIN))/kubectl} deploy/k8s/deploy.sh apply $(K8S_OVERLAY) $(IMAGE) "$$digest"

deploy-champion: ## Roll IMAGE:champion (the registry's @champion image) out the same way (KUBE_CONFIG)
	@$(MAKE) --no-print-directory deploy IMAGE_TAG=champion

k8s-render: env ## Print K8S_OVERLAY's manifests with IMAGE pinned to DIGEST (what `make deploy` applies)
	@KUBECTL=$(BIN)/kubectl deploy/k8s/deploy.sh render $(K8S_OVERLAY) $(IMAGE) $(DIGEST)

test-deploy: env ## Render the manifests; Kubernetes schemas, the KServe/Prometheus CRD schemas, checkov
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)
