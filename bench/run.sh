#!/usr/bin/env bash
# Build bench/.venv (textgraph from this checkout + TextGrad 0.1.8 + DSPy 3.4) and run the
# comparison: `step` and `overhead` (textgraph vs TextGrad), `evaluate` (tg.Evaluator vs
# dspy.Evaluate) and `evaluate-overhead` (tg.Evaluator on an instant engine).
# Usage: bench/run.sh [harness options, e.g. --name quick --batches 1,8 --repeats 3,
#                      --name evaluate --workloads evaluate,evaluate-overhead]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements.txt" -e "$HERE/.."
XDG_CACHE_HOME="$(mktemp -d)"                 # no framework's disk cache may answer
export XDG_CACHE_HOME
trap 'rm -rf "$XDG_CACHE_HOME"' EXIT
export LITELLM_LOCAL_MODEL_COST_MAP=True      # TextGrad's litellm import must not reach out
export CI=1                                   # no progress bars
# TextGrad's logs and DSPy's cache: bench/harness.py points both at a temporary directory.
"$VENV/bin/python" "$HERE/harness.py" "$@"
