#!/usr/bin/env bash
# The GPU check (issue 12): run it on a machine with an NVIDIA GPU, from the repository root.
#
#   bash scripts/gpu_check.sh [OUTDIR]
#
# 1. the tests that mean something on a GPU (tests/test_gpu.py: fp16 on CUDA within 0.01 of the
#    card's fp32 snippet, batches, the app on CUDA), which skip where there is no GPU;
# 2. `bench` in fp16 at batch 16, 64 and 256: files to scores and model only, beside the card;
# 3. `/classify` latency through gradio_client (bench --api).
# It ends with one table. Needs python3 with a CUDA torch; gradio and the other pins are installed
# from ./.whl when that folder holds wheels (a machine with no index), else from the index.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-check}}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

need=$(python3 - <<'PY'
import importlib.util
print(" ".join(m for m in ("gradio", "gradio_client", "av", "pytest", "hypothesis") if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$need" ]; then
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --find-links .whl "gradio[mcp]==6.31.0" gradio_client==2.7.2 av==18.1.0 pytest hypothesis
  else
    python3 -m pip install -q "gradio[mcp]==6.31.0" gradio_client==2.7.2 av==18.1.0 pytest hypothesis
  fi
fi

python3 -m pytest -q tests/test_gpu.py 2>&1 | tee "$out/tests.txt"

work="$out/bench"
for batch in 16 64 256; do
  python3 -m nsfw_space bench --device cuda --precision fp16 --batch-size "$batch" --images 256 \
    --rounds 2 --workdir "$work" $([ "$batch" = 16 ] && echo --api --api-calls 40) \
    2>&1 | tee "$out/bench-$batch.txt"
done

python3 - "$out" <<'PY'
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
print()
print("GPU:", (out / "gpu.txt").read_text().strip())
tests = (out / "tests.txt").read_text().strip().splitlines()
print("tests/test_gpu.py:", tests[-1] if tests else "no output")
print(f"{'batch':>5} {'files to scores img/s':>22} {'vs card':>8} {'model only img/s':>17} {'first/second batch':>19}")
for batch in (16, 64, 256):
    text = (out / f"bench-{batch}.txt").read_text()
    ours = next((l for l in text.splitlines() if l.startswith("nsfw_space predict_batch")), "")
    rate = re.findall(r"\s(\d+\.\d)\s+(\d+\.\d)x", ours)
    model = re.search(r"model only, batch \d+: ([\d.]+) images/s", text)
    first = re.search(r"\(([\d.]+)x\)\s*$", text, re.M)
    files, ratio = rate[0] if rate else ("?", "?")
    print(f"{batch:>5} {files:>22} {ratio + 'x':>8} {model.group(1) if model else '?':>17} {first.group(1) + 'x' if first else '?':>19}")
api = (out / "bench-16.txt").read_text().splitlines()
start = next((i for i, line in enumerate(api) if line.startswith("/classify through")), None)
print("\n".join(api[start : start + 4]) if start is not None else "/classify: no output")
PY
