#!/usr/bin/env bash
# The CI report: metrics and params diff against a base revision (`dvc metrics diff --md`), the
# gate report, and the plots diff (`dvc plots diff`, HTML). GitHub Actions posts comment.md on the
# pull request (`make ci-comment`) and shows it as the job summary; both CI systems keep the
# folder as an artifact.
#
#   usage: ci-report.sh DVC OUT_DIR [BASE]
#     DVC       the dvc executable (.venv/bin/dvc)
#     OUT_DIR   written afresh: comment.md, plots/index.html (ignored by git)
#     BASE      a git revision to compare with; HEAD when empty or not a commit here
set -euo pipefail

dvc=${1:?usage: ci-report.sh DVC OUT_DIR [BASE]}
out=${2:?usage: ci-report.sh DVC OUT_DIR [BASE]}
base=${3:-}
# The test metrics; the gate's and the parity check's numbers are in the gate report below.
metrics_file=${CI_METRICS_FILE:-reports/metrics.json}

if [ -z "$base" ] || ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  [ -z "$base" ] || echo "ci-report: '$base' is not a commit in this clone; comparing with HEAD" >&2
  base=HEAD
fi
base_short=$(git rev-parse --short "$base")

rm -rf "$out"
mkdir -p "$out"
printf '*\n' >"$out/.gitignore"

# Where the run's artifacts are, for the plots link.
if [ -n "${GITHUB_RUN_ID:-}" ]; then
  where="the \`pipeline-reports\` artifact of [this run](${GITHUB_SERVER_URL:-https://github.com}/${GITHUB_REPOSITORY:-}/actions/runs/${GITHUB_RUN_ID})"
elif [ -n "${BUILD_URL:-}" ]; then
  where="[this build's artifacts](${BUILD_URL}artifact/$out/plots/index.html)"
else
  where="\`$out/plots/index.html\`"
fi

plots_note="Confusion matrix, ROC and precision-recall curves, \`$base_short\` against this change: \`plots/index.html\` in $where."
if ! "$dvc" plots diff "$base" --out "$out/plots" >"$out/plots-diff.log" 2>&1; then
  plots_note="\`dvc plots diff\` failed (the pipeline probably stopped before \`evaluate\`):"$'\n\n```\n'"$(tail -n 5 "$out/plots-diff.log")"$'\n```'
fi

{
  echo "<!-- tabular-mlops-ci-report -->"
  echo "## Model report for \`$(git rev-parse --short HEAD)\`"
  echo
  echo "### Metrics against \`$base_short\`"
  echo
  if metrics=$("$dvc" metrics diff "$base" --targets "$metrics_file" --md --all 2>"$out/metrics-diff.log") \
    && [ -n "$metrics" ]; then
    echo "$metrics"
  else
    echo "_No metrics to compare: the pipeline stopped before \`evaluate\` (see the job log)._"
  fi
  if params=$("$dvc" params diff --md "$base" 2>/dev/null) && [ -n "$params" ]; then
    echo
    echo "### Params changed since \`$base_short\`"
    echo
    echo "$params"
  fi
  echo
  if [ -f reports/gate.md ]; then
    sed 's/^#/###/' reports/gate.md
  else
    echo "### Model gate: not run"
    echo
    echo "_The pipeline stopped before the gate; see the job log._"
  fi
  echo
  echo "### Plots"
  echo
  echo "$plots_note"
} >"$out/comment.md"

if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat "$out/comment.md" >>"$GITHUB_STEP_SUMMARY"
fi
echo "ci-report: wrote $out/comment.md and $out/plots/ (compared with $base_short)"
