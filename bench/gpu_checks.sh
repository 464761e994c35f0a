#!/usr/bin/env bash
# Every GPU check and GPU benchmark of the issues in one run, for a lent GPU machine (about 8
# minutes on one H200): the CUDA tests (tests/test_gpu.py), then bench/throughput.py on the NCSN
# paper shape (CIFAR-10, batch 128, annealed Langevin at batch 1000), fast and plain, and on the toy
# MLP. Needs only python3 with torch, numpy, tqdm, pandas, pyyaml and pytest (no install: the
# package is imported from this checkout). Writes device.txt, pytest.txt and throughput.jsonl
# (one JSON line per run) under $OUT, or /tmp/gpu_checks.
#
#   bash bench/gpu_checks.sh
#
# 50,000 samples of NCSN's sampler (10 levels × 100 steps) take 50,000 × 1,000 / sample_evals_per_s
# GPU-seconds at the sample batch's images per evaluation (target ≤ 1.7 GPU-hours).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/device.txt"
python3 -c "import torch; raise SystemExit(not torch.cuda.is_available())" \
  || { echo "bench/gpu_checks.sh: no CUDA GPU is visible to torch; nothing to check" | tee -a "$out/device.txt"; exit 2; }

timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$out/pytest.txt" || status=1

ncsn=(--model ncsn --shape 3,32,32 --ngf 128 --batch 128 --sample-batch 1000 --steps 40 --repeats 3 --device cuda)
for mode in --fast --plain; do
  timeout 300 python3 bench/throughput.py "${ncsn[@]}" "$mode" 2>"$out/throughput_ncsn${mode#--}.err" \
    | tee -a "$out/throughput.jsonl" || { status=1; tail -20 "$out/throughput_ncsn${mode#--}.err"; }
done
timeout 120 python3 bench/throughput.py --model mlp --dataset gmm_ring8 --device cuda --repeats 3 2>"$out/throughput_mlp.err" \
  | tee -a "$out/throughput.jsonl" || { status=1; tail -20 "$out/throughput_mlp.err"; }
exit $status
