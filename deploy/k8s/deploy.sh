#!/usr/bin/env bash
# Roll the serving image out to a Kubernetes cluster (`make deploy`, `make deploy-champion`).
#
#   deploy.sh render OVERLAY IMAGE DIGEST   print OVERLAY's manifests with the image pinned,
#                                           in namespace K8S_NAMESPACE
#   deploy.sh apply  OVERLAY IMAGE DIGEST   apply them, then wait for the rollout
#   deploy.sh digest IMAGE:TAG              print the registry digest (sha256:...) of IMAGE:TAG
#
# The image is always pinned by digest, never by tag, so what runs is exactly what CI pushed
# and tested. `apply` reads the cluster's kubeconfig from KUBE_CONFIG (its contents, as a CI
# secret holds it) or KUBECONFIG (a path); KUBECTL (default kubectl), K8S_NAMESPACE (default
# tabular-mlops) and ROLLOUT_TIMEOUT (default 300s) apply.
set -euo pipefail

usage="usage: deploy.sh render|apply OVERLAY IMAGE DIGEST | deploy.sh digest IMAGE:TAG"
kubectl=${KUBECTL:-kubectl}
action=${1:?$usage}

render() {
  local overlay=$1 image=$2 digest=$3
  if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
    echo "deploy.sh: DIGEST must be sha256:<64 hex digits>, not '$digest'" >&2
    exit 2
  fi
  if [ ! -f "$overlay/kustomization.yaml" ]; then
    echo "deploy.sh: '$overlay' is not a kustomize overlay (no kustomization.yaml)" >&2
    exit 2
  fi
  local namespace=${K8S_NAMESPACE:-tabular-mlops}
  if [[ ! $namespace =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
    echo "deploy.sh: K8S_NAMESPACE must be a DNS label (a-z, 0-9, '-', at most 63), not '$namespace'" >&2
    exit 2
  fi
  local work
  work=$(mktemp -d)
  # a throw-away kustomization on top of the overlay: the checked-in files stay untouched, and
  # K8S_NAMESPACE replaces the overlay's namespace (apply -n then agrees with every object)
  cat > "$work/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $namespace
resources:
  - $(realpath --relative-to="$work" "$overlay")
images:
  - name: tabular-mlops-serving
    newName: $image
    digest: $digest
YAML
  "$kubectl" kustomize --load-restrictor LoadRestrictionsNone "$work"
  rm -rf "$work"
}

case $action in
  render)
    render "${2:?$usage}" "${3:?$usage}" "${4:?$usage}"
    ;;
  apply)
    overlay=${2:?$usage} image=${3:?$usage} digest=${4:?$usage}
    if [ -n "${KUBE_CONFIG:-}" ]; then
      config=$(mktemp)
      trap 'rm -f "$config"' EXIT
      chmod 600 "$config"
      printf '%s\n' "$KUBE_CONFIG" > "$config"
      export KUBECONFIG=$config
    fi
    namespace=${K8S_NAMESPACE:-tabular-mlops}
    manifests=$(render "$overlay" "$image" "$digest")
    printf '%s\n' "$manifests" | "$kubectl" apply -n "$namespace" -f -
    "$kubectl" rollout status -n "$namespace" deployment/serving --timeout "${ROLLOUT_TIMEOUT:-300s}"
    echo "deploy.sh: $image@$digest is rolled out ($overlay, namespace $namespace)"
    ;;
  digest)
    ref=${2:?$usage}
    tool=${CONTAINER_TOOL:-docker}
    repo_digest=$("$tool" inspect --format '{{index .RepoDigests 0}}' "$ref" 2>/dev/null || true)
    if [ -z "$repo_digest" ]; then
      "$tool" pull -q "$ref" >/dev/null
      repo_digest=$("$tool" inspect --format '{{index .RepoDigests 0}}' "$ref")
    fi
    printf '%s\n' "${repo_digest##*@}"
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
