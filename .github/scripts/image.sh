#!/usr/bin/env bash
# Publish the serving image to its registry (`make push-image`, `make retag-image`).
#
#   image.sh push  IMAGE TAG [EXTRA_TAG ...]  push IMAGE:TAG, then the same image as each EXTRA_TAG
#   image.sh retag IMAGE FROM_TAG TO_TAG      pull IMAGE:FROM_TAG and push it as IMAGE:TO_TAG
#
# CONTAINER_TOOL is the docker-compatible client (default docker; podman works too). When
# REGISTRY_PASSWORD is set it logs in first as REGISTRY_USER to IMAGE's registry, and logs out
# again on exit, so no credential is left behind on a shared build agent.
set -euo pipefail

usage="usage: image.sh push IMAGE TAG [EXTRA_TAG ...] | image.sh retag IMAGE FROM_TAG TO_TAG"
tool=${CONTAINER_TOOL:-docker}
action=${1:?$usage}
image=${2:?$usage}
shift 2

# The registry is the first path component when it looks like a host (docker's rule).
first=${image%%/*}
if [ "$first" != "$image" ] && { [[ $first == *.* ]] || [[ $first == *:* ]] || [ "$first" = localhost ]; }; then
  registry=$first
else
  echo "image.sh: IMAGE '$image' names no registry host; set IMAGE, e.g. ghcr.io/OWNER/REPO" >&2
  exit 1
fi
if [ "$image" != "$(printf '%s' "$image" | tr '[:upper:]' '[:lower:]')" ]; then
  echo "image.sh: IMAGE '$image' has capitals; registries take lowercase repository names" >&2
  exit 1
fi

if [ -n "${REGISTRY_PASSWORD:-}" ]; then
  : "${REGISTRY_USER:?REGISTRY_USER is not set (the user name that goes with REGISTRY_PASSWORD)}"
  printf '%s' "$REGISTRY_PASSWORD" | "$tool" login "$registry" --username "$REGISTRY_USER" --password-stdin
  trap '"$tool" logout "$registry" >/dev/null 2>&1 || true' EXIT
fi

case $action in
  push)
    tag=${1:?$usage}
    shift
    "$tool" push "$image:$tag"
    for extra in "$@"; do
      "$tool" tag "$image:$tag" "$image:$extra"
      "$tool" push "$image:$extra"
    done
    echo "image.sh: pushed $image:$tag${*:+ as well as }${*/#/$image:}"
    ;;
  retag)
    from=${1:?$usage}
    to=${2:?$usage}
    if ! "$tool" pull "$image:$from"; then
      echo "image.sh: $image:$from is not in the registry: only versions released by CI (make push-image) have an image" >&2
      exit 1
    fi
    "$tool" tag "$image:$from" "$image:$to"
    "$tool" push "$image:$to"
    echo "image.sh: $image:$to is now $image:$from"
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
