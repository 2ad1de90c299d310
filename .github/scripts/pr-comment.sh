#!/usr/bin/env bash
# Post the CI report as ONE pull-request comment, updated in place on every later run (what CML's
# `cml comment update` does), with the GitHub CLI only.
#
#   usage: pr-comment.sh BODY_FILE
#   env:   GH_TOKEN (pull-requests: write), GITHUB_REPOSITORY (owner/name), PR_NUMBER
#
# The comment is found again by the marker line the body starts with, among comments written by
# a bot (the workflow's token), so a person quoting the report is never overwritten.
set -euo pipefail

body=${1:?usage: pr-comment.sh BODY_FILE}
: "${GITHUB_REPOSITORY:?GITHUB_REPOSITORY (owner/name) is not set}"
: "${PR_NUMBER:?PR_NUMBER (the pull request number) is not set}"
marker='<!-- tabular-mlops-ci-report -->'

if [ ! -s "$body" ]; then
  echo "pr-comment: '$body' is missing or empty; run \`make ci-report\` first" >&2
  exit 1
fi
if ! grep -qF -- "$marker" "$body"; then
  echo "pr-comment: '$body' lacks the marker line $marker" >&2
  exit 1
fi

existing=$(gh api --paginate "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" \
  --jq ".[] | select(.user.type == \"Bot\" and (.body | contains(\"$marker\"))) | .id" | head -n 1)

if [ -n "$existing" ]; then
  gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" \
    -F "body=@$body" --jq .html_url
else
  gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" \
    -F "body=@$body" --jq .html_url
fi
