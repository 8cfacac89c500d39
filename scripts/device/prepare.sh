#!/usr/bin/env bash
# The code-edit benchmark on a lent GPU machine (the workplace's `device` tool), which
# reaches no registry and takes at most 64 MiB per call. This prepares three ignored
# folders for three calls on one warm machine:
#   .devA  Python wheels (cp312), the vendored llama.cpp of llama-cpp-python 0.3.36
#          (trimmed, 5.5 MB), its Python package, the first 45 MB of SmolLM2, setup.sh
#          call: `bash .devA/setup.sh` (carry .devA): installs, starts the CUDA build
#          (about 250 s on 16 cores) in its own session
#   .devB  the rest of SmolLM2
#   .devC  wait.sh, bench.sh
#          call: `bash .devC/wait.sh 330` (carry .devB .devC): joins the model, waits
#          for the build, prints its first error
#          call: `bash .devC/bench.sh 0` (carry .devC): ggufd and llama-server (same
#          llama.cpp) on the GPU; `bench.sh N` adds N s of the same on the CPU alone
# Calls must follow each other within the machine's idle release (30 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in .devA .devB .devC; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >>.git/info/exclude; done
mkdir -p .devA/whl .devB .devC /tmp/ggufd-dev
v() { .venv/bin/pip list 2>/dev/null | awk -v n="$1" 'tolower($1)==tolower(n){print $2}'; }
pkgs=(fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv annotated-types
  typing-inspection uvicorn diskcache Jinja2 MarkupSafe annotated-doc typing_extensions httpx
  httpcore anyio h11 click PyYAML)
pins=(); for p in "${pkgs[@]}"; do pins+=("$p==$(v "$p")"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .devA/whl "${pins[@]}"
src=/tmp/ggufd-dev/llama_cpp_python-0.3.36
if [ ! -d "$src" ]; then
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python -d /tmp/ggufd-dev llama-cpp-python==0.3.36
  tar -xzf /tmp/ggufd-dev/llama_cpp_python-0.3.36.tar.gz -C /tmp/ggufd-dev
fi
(cd "$src/vendor" && tar --exclude=llama.cpp/tools/ui/src --exclude=llama.cpp/tools/ui/static \
  --exclude=llama.cpp/tools/ui/tests -cJf "$OLDPWD/.devA/lcpp.tar.xz" llama.cpp/CMakeLists.txt \
  llama.cpp/cmake llama.cpp/ggml llama.cpp/src llama.cpp/common llama.cpp/include \
  llama.cpp/vendor llama.cpp/tools llama.cpp/licenses llama.cpp/LICENSE llama.cpp/app)
(cd "$src" && tar -czf "$OLDPWD/.devA/llama_cpp_py.tar.gz" llama_cpp)
model=$(.venv/bin/python -c "from ggufd.settings import default_model_path as d; print(d())")
head -c 45000000 "$model" >.devA/model.partA
tail -c +45000001 "$model" >.devB/model.partB
sha256sum "$model" | cut -d' ' -f1 >.devB/model.sha256
cp scripts/device/setup.sh .devA/ && cp scripts/device/wait.sh scripts/device/bench.sh .devC/
du -sh .devA .devB .devC
