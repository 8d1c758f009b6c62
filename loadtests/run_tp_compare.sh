#!/usr/bin/env bash
# One device call on a 2-GPU H200 machine (nvidia-h200-x2), results under $OUT:
#  phase A, in parallel: GPU0 runs the planner's 32B BF16 profile at TP=1 (the baseline for
#  issue 7); GPU1 tries an 8B FP8 variant for issue 5 (FP8 KV cache + encoder CUDA graphs,
#  which need vLLM's V1 model runner);
#  phase B: the same 32B profile at TP=2 on both GPUs.
# Usage (device): source .devicekit/parts-sm90/p00/kit/device_env.sh && bash loadtests/run_tp_compare.sh
set -u
export PYTHONPATH=$PWD:$PWD/clients:${PYTHONPATH:-} PYTHONUNBUFFERED=1
# NVLink multicast stays off on shared hosts (and vLLM's symmetric-memory all-reduce with it)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
       VLLM_ALLREDUCE_USE_SYMM_MEM=0
R=/tmp/r; mkdir -p $R/tp1 $R/tp2 $R/enc
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $R/gpu.txt
nvidia-smi topo -m >> $R/gpu.txt 2>&1
C="python3 -m loadtests.gpu_compare --card h200 --prompts-factor 3"
CUDA_VISIBLE_DEVICES=0 timeout 280 $C --shape 32b --quant bf16 --only planner \
    --concurrency 16,32,64,96 --port 8000 --out $R/tp1 > $R/tp1.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 VLLM_USE_V2_MODEL_RUNNER=0 timeout 280 $C --shape 8b --quant fp8 \
    --only enc --variant "enc=--kv-cache-dtype fp8 --compilation-config '{\"cudagraph_mm_encoder\":true}'" \
    --concurrency 64,96,128 --port 8100 --out $R/enc > $R/enc.log 2>&1 &
wait
# vLLM runs in its own session: kill leftovers by title (bracket: never match this shell)
pkill -9 -f '[V]LLM::'; pkill -9 -f 'launch[.]vllm_serve'; sleep 5
cat $R/tp1.log $R/enc.log | grep -v "^\s*$" | tail -20
timeout ${PHASE_B_S:-240} $C --shape 32b --quant bf16 --tp 2 --only planner \
    --concurrency 16,32,64,96,128 --port 8000 --out $R/tp2 2>&1 | tee $R/tp2.log
tar czf $OUT/tp_compare.tgz -C /tmp r
