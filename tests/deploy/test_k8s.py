"""The Kubernetes manifests, rendered as `make deploy` renders them, checked offline.

- every core kind against the Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: an
  unknown field is an error);
- the KServe ``InferenceService``, ``ServiceMonitor`` and ``PrometheusRule`` against the JSON
  schemas in ``deploy/k8s/schemas/`` (written from the published CRDs);
- the security scan ``checkov``, whose only skipped checks are listed with a reason in
  ``deploy/k8s/checkov.yaml``;
- and the same checks fail on deliberately broken manifests.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import checkov, kubectl

pytestmark = pytest.mark.deploy

K8S = REPO_ROOT / "deploy/k8s"
DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = "ghcr.io/acme/tabular-mlops"
K8S_VERSION = "1.30.0"
SCHEMAS = {
    "InferenceService": "inferenceservice.schema.json",
    "ServiceMonitor": "servicemonitor.schema.json",
    "PrometheusRule": "prometheusrule.schema.json",
}
TARGETS = ("overlays/directory", "overlays/registry", "kserve", "monitoring")


def render(target: str, **env: str) -> list[dict]:
    """What `make deploy` applies: the overlay with the image pinned to a digest."""
    proc = subprocess.run(
        [str(K8S / "deploy.sh"), "render", str(K8S / target), IMAGE, DIGEST],
        env={"KUBECTL": kubectl(), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {target: render(target) for target in TARGETS}


def validate(doc: dict) -> None:
    """Schema-check one resource: CRD kinds against our schemas, the rest against Kubernetes'."""
    if doc["kind"] in SCHEMAS:
        schema = json.loads((K8S / "schemas" / SCHEMAS[doc["kind"]]).read_text())
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def by_kind(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def test_every_rendered_resource_passes_its_schema(rendered):
    kinds = set()
    for docs in rendered.values():
        for doc in docs:
            validate(doc)
            kinds.add(doc["kind"])
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
        "ConfigMap",
        "InferenceService",
        "ServiceMonitor",
        "PrometheusRule",
    }


@pytest.mark.parametrize("target", ["overlays/directory", "overlays/registry"])
def test_the_deployment_is_pinned_probed_non_root_and_read_only(rendered, target):
    docs = rendered[target]
    deployment = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{IMAGE}@{DIGEST}"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"] and "emptyDir" in mounts["/home/serving"]
    env = {e["name"]: e for e in container["env"]}
    token_file = Path(env["SERVING_API_TOKEN_FILE"]["value"])
    assert mounts[str(token_file.parent)]["secret"]["secretName"] == "serving-api-token"
    assert "SERVING_API_TOKEN" not in env  # the token is never a literal in a manifest
    assert all("valueFrom" not in e or "secretKeyRef" not in e["valueFrom"] for e in env.values())
    labels = deployment["spec"]["selector"]["matchLabels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = by_kind(docs, kind)["spec"]["selector"]
        assert selector.get("matchLabels", selector) == labels
    assert by_kind(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "serving"
    assert {d["metadata"].get("namespace") for d in docs} == {"tabular-mlops"}


def test_registry_overlay_follows_champion_with_a_login_file(rendered):
    docs = rendered["overlays/registry"]
    config = by_kind(docs, "ConfigMap")["data"]
    assert config["SERVING_MODEL_URI"].endswith("@champion")
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/home/serving/.mlflow"]]["secret"]["secretName"] == "mlflow-login"


def test_checkov_finds_nothing_unexplained(rendered, tmp_path):
    for target, docs in rendered.items():
        (tmp_path / f"{target.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(docs))
    report = checkov(tmp_path)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 50
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    config = yaml.safe_load((K8S / "checkov.yaml").read_text())
    assert skipped <= set(config.get("skip-check", []))


# ---------------------------------------------------------------------- broken manifests
def _deployment(rendered) -> dict:
    return copy.deepcopy(by_kind(rendered["overlays/directory"], "Deployment"))


def test_a_misspelt_or_mistyped_field_fails_the_kubernetes_schema(rendered):
    typo = _deployment(rendered)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(typo)
    wrong_type = _deployment(rendered)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type"):
        validate(wrong_type)


def test_the_autoscaler_alone_sets_the_replica_count(rendered):
    """`replicas: 2` in the Deployment reset the HPA's count on every apply."""
    for target in ("overlays/directory", "overlays/registry"):
        deployment = by_kind(rendered[target], "Deployment")
        assert "replicas" not in deployment["spec"]
        hpa = by_kind(rendered[target], "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] >= 2


def test_a_broken_inference_service_fails_its_crd_schema(rendered):
    service = by_kind(rendered["kserve"], "InferenceService")
    validate(service)
    for path, value, message in (
        (("spec", "predictor", "minReplica"), 2, "Additional properties"),
        (("spec", "predictor", "scaleMetric"), "gpu", "'gpu' is not one of"),
        (("spec", "predictor", "containers"), [{"name": "Bad_Name", "image": "x"}], "Bad_Name"),
    ):
        broken = copy.deepcopy(service)
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError, match=message):
            validate(broken)
    without = copy.deepcopy(service)
    del without["spec"]["predictor"]["containers"]
    with pytest.raises(jsonschema.ValidationError):
        validate(without)


def test_a_privileged_root_container_fails_checkov(rendered, tmp_path):
    insecure = _deployment(rendered)
    container = insecure["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "runAsUser": 0}
    del insecure["spec"]["template"]["spec"]["securityContext"]
    del container["livenessProbe"]
    (tmp_path / "insecure.yaml").write_text(yaml.safe_dump(insecure))
    failed = {c["check_id"] for c in checkov(tmp_path)["results"]["failed_checks"]}
    # privileged, may run as root, no liveness probe
    assert {"CKV_K8S_16", "CKV_K8S_23", "CKV_K8S_8"} <= failed


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_namespace_places_every_object(target, rendered):
    # deploy.sh applies with -n K8S_NAMESPACE: an object rendered into the overlay's own
    # namespace made kubectl refuse the whole apply ("does not match the namespace").
    moved = render(target, K8S_NAMESPACE="team-a")
    assert len(moved) == len(rendered[target])
    namespaced = [d for d in moved if d["kind"] != "Namespace"]
    assert namespaced
    assert {d["metadata"].get("namespace") for d in namespaced} == {"team-a"}
    assert {d["metadata"].get("namespace") for d in rendered[target]} == {"tabular-mlops"}


def test_k8s_namespace_must_be_a_dns_label():
    proc = subprocess.run(
        [str(K8S / "deploy.sh"), "render", str(K8S / "overlays/directory"), IMAGE, DIGEST],
        env={"KUBECTL": kubectl(), "PATH": "/usr/bin:/bin", "K8S_NAMESPACE": "Team_A"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "K8S_NAMESPACE must be a DNS label" in proc.stderr and "'Team_A'" in proc.stderr


def test_deploy_refuses_a_tag_in_place_of_a_digest_and_skips_without_a_cluster():
    proc = subprocess.run(
        [str(K8S / "deploy.sh"), "render", str(K8S / "overlays/directory"), IMAGE, "latest"],
        env={"KUBECTL": kubectl(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "DIGEST must be sha256:<64 hex digits>, not 'latest'" in proc.stderr
    make = shutil.which("make")
    skipped = subprocess.run(
        [make, "-s", "deploy", "deploy-champion"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "KUBE_CONFIG": "", "KUBECONFIG": "", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.count("KUBE_CONFIG is not set; no cluster to deploy to, skipping") == 2


def test_the_prometheus_rules_parse_with_promtool(rendered, tmp_path):
    rule = by_kind(rendered["monitoring"], "PrometheusRule")
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (system-packages.txt)"
    proc = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 3 rules found" in proc.stdout
    broken = copy.deepcopy(rule["spec"]["groups"])
    broken[0]["rules"][0]["expr"] = "sum(serving_ready_workers == "
    rules_file.write_text(yaml.safe_dump({"groups": broken}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "parse error" in proc.stdout + proc.stderr
