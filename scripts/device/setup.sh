#!/usr/bin/env bash
# Device call 1 (scripts/device/prepare.sh): Python deps, llama.cpp sources, model part A; the CUDA build starts in
# its own session (it outlives this call) and logs to /tmp/w/build.log.
set -u
W=/tmp/w; mkdir -p $W/py
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devA/whl/*.whl || exit 1
tar -xJf .devA/lcpp.tar.xz -C $W && tar -xzf .devA/llama_cpp_py.tar.gz -C $W/py && cp .devA/model.partA $W/
export PATH=/usr/local/cuda/bin:$PATH
which nvcc cmake ninja gcc; nvcc --version | tail -2; nproc; free -g | head -2
lscpu | grep -i "model name"; grep -o -w "amx_tile\|avx512f\|avx2" /proc/cpuinfo | sort | uniq -c
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
cd $W
cat > build.sh <<'EOS'
export PATH=/usr/local/cuda/bin:$PATH
cd /tmp/w
GIT_CEILING_DIRECTORIES=/tmp/w cmake -S llama.cpp -B b -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_RPC=ON \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > cfg.log 2>&1 || { echo cfg > build.rc; exit; }
date +%s > build.start
cmake --build b --target llama ggml mtmd ggml-rpc llama-server -j 18 > build.log 2>&1
echo $? > build.rc; date +%s > build.end
EOS
setsid nohup bash build.sh > /dev/null 2>&1 < /dev/null &
sleep 25; tail -n 5 cfg.log; tail -n 2 build.log 2>/dev/null
