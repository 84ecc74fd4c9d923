#!/usr/bin/env bash
# The main job on the embedded default model: set up, then analyse a sample problem into ./anchorlens-report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The embedded 135M model seldom writes \boxed{}; the default answer rule is the paper's (the first \boxed{}), so
# the demo reads its answers with boxed_or_last_number (a later --extractor overrides it).
exec .venv/bin/anchorlens analyze --out anchorlens-report --extractor boxed_or_last_number "$@"
