#!/usr/bin/env bash
# A GPU session's checks in one run, most important first, each under its own time limit (at most
# 9.3 minutes in all, under the device tool's 10 per command); everything lands in $OUT. Meant for
# the device tool's machine, which has torch with CUDA but no faiss: a faiss-cpu wheel in .whl/
# (carried; see the project's notes) is installed beside it so `import faiss` works, and K-means
# then runs in torch on the GPU.
#
#   bash bench/gpu_session.sh
set -u
OUT=${OUT:-/tmp/qrp-gpu-session}
mkdir -p "$OUT"
if ! python3 -c "import faiss" 2>/dev/null && compgen -G ".whl/faiss_cpu-*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/faiss_cpu-*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, faiss; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'faiss', faiss.__version__)"
} > "$OUT/machine.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...: run, keep its output, note its exit status and time
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}

# 1. correctness on the GPU: CUDA graphs of probe epochs equal the CPU's; K-means and metrics on the device
step pytest 90 python3 -m pytest -q -p no:cacheprovider tests/test_probe.py tests/test_quantize.py \
  tests/test_metrics.py tests/test_pipeline.py tests/test_extract.py
# 2. probe epochs at 1M rows: autograd steps against the CUDA-graph epochs (1 and 11 stacked probes)
step probe_step 110 python3 bench/gpu_probe_step.py
# 3. Lloyd iterations at 256k x 2048, K=1000: float32 against TF32 with float32 where ambiguous
step kmeans_step 50 python3 bench/gpu_kmeans_step.py
# 4. one model at ImageNet scale, end to end, clustering by clustering under the budget
step imagenet_scale 310 python3 bench/gpu_imagenet_scale.py --skip-checks --profile --budget-s 220
python3 bench/gpu_summary.py "$OUT" | tee "$OUT/summary.txt"
