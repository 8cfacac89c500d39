#!/usr/bin/env bash
# Device call 3: the code-edit workload on the GPU (all layers), then on the CPU alone
# (CUDA hidden) if $1 > 0 seconds are given for it.
W=/tmp/w
mkdir -p $W/py/llama_cpp/lib && find $W/b -name "*.so*" -exec cp -a {} $W/py/llama_cpp/lib/ \;
export PYTHONPATH=/tmp/site:$W/py:$PWD PYTHONUNBUFFERED=1 GGUFD_BENCH_LLAMA_SERVER=$W/b/bin/llama-server
python3 -c "import llama_cpp; print('gpu offload', llama_cpp.llama_supports_gpu_offload())" || exit 1
$W/b/bin/llama-server --version 2>&1 | tail -n 2
run() {  # name timeout extra-env...
  local name=$1 t=$2; shift 2
  env "$@" timeout $t python3 -m ggufd.bench.cpu --model $W/smol.gguf --peers ggufd,llama_server \
    --rounds ${ROUNDS:-3} --only edits --out $W/$name > $W/$name.txt 2>&1
  echo "== $name rc=$?"; grep -v "^    round" $W/$name.txt | tail -n 30
  cp $W/$name.txt $OUT/ 2>/dev/null; cp $W/$name/cpu.json $OUT/$name.json 2>/dev/null
  tar -czf $OUT/$name-logs.tgz -C $W/$name logs 2>/dev/null
}
run gpu ${GPU_S:-200} GGUFD_N_GPU_LAYERS=-1
nvidia-smi --query-gpu=memory.used --format=csv
[ "${1:-0}" -gt 0 ] && ROUNDS=2 run cpu $1 CUDA_VISIBLE_DEVICES= GGUFD_N_GPU_LAYERS=0
exit 0
