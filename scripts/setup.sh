#!/usr/bin/env bash
# Create .venv and install hybridtower with its test tools. torch/torchvision are pinned by
# constraints.txt to builds that import together on CPU; on a GPU machine with its own torch, install
# with `pip install -e .` into that environment instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
if [ -f scripts/setup-browser.sh ]; then bash scripts/setup-browser.sh; fi
