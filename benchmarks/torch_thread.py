"""One OpenMP pool per process (nsfw_space.model.torch_thread) against the layout it replaced.

    python benchmarks/torch_thread.py [--workdir DIR] [--repeats 2]

PyTorch's libgomp keeps a pool of worker threads for each lasting thread that starts parallel
work. Before the torch thread, a Space loaded its model on the main thread (which kept a pool)
and ran it on the batcher's thread (a second pool): more OpenMP threads than cores, where libgomp
stops spinning between parallel regions. Each case runs in a fresh process, cases alternating:

- ``one pool``: what a classifier does now: load and forwards on its torch thread; the caller,
  here the main thread, has done no parallel work of its own.
- ``two pools``: the same, after one parallel torch operation on the main thread (as loading the
  model there did): the layout before this change.

Prints the CPU, then side by side: microseconds per parallel region (3,000 ``torch.add`` on 200,000
floats) and milliseconds per forward of the int8 (or, where int8 is not available, the served)
ViT-B/16 at batch 1 and batch 16, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CASES = ("one pool", "two pools")


def _median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run_case(case: str, model_dir: str) -> dict[str, float | str]:
    """One case in this (fresh) process; returns its figures."""
    import numpy as np
    import torch

    from nsfw_space import NSFWClassifier
    from nsfw_space.model.torch_thread import on_torch_thread

    if case == "two pools":
        torch.ones(1_000_000).add_(1)  # any parallel operation gives the main thread its pool
    clf = NSFWClassifier.from_pretrained(model_dir, device="cpu", int8_build="now")
    clf.wait_until_ready()
    x, out = torch.randn(200_000), torch.empty(200_000)

    def regions() -> None:
        for _ in range(3000):
            torch.add(x, 1, out=out)

    pixels = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    return {
        "precision": clf.precision,
        "region_us": on_torch_thread(_median_ms, regions, 5) * 1000 / 3000,
        "batch1_ms": _median_ms(lambda: clf.probabilities(pixels[:1]), 20),
        "batch16_ms": _median_ms(lambda: clf.probabilities(pixels), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the bench model is kept (built once)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per case (default 2)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # the child's own
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.model)))
        return

    from nsfw_space.model.device import cpu_description
    from nsfw_space.tools.benchmark import ensure_benchmark_model

    model_dir = ensure_benchmark_model(Path(args.workdir or tempfile.mkdtemp(prefix="nsfw-bench-")))
    results: dict[str, list[dict]] = {case: [] for case in CASES}
    for _ in range(args.repeats):
        for case in CASES:
            child = subprocess.run(
                [sys.executable, __file__, "--case", case, "--model", model_dir],
                capture_output=True,
                text=True,
                check=True,
            )
            results[case].append(json.loads(child.stdout.strip().splitlines()[-1]))
    import torch

    print(f"machine: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"ViT-B/16 at 224 px, {results[CASES[0]][0]['precision']}; {args.repeats} fresh processes per case")
    print(f"{'case':<12} {'us per parallel region':>24} {'batch 1 ms':>22} {'batch 16 ms':>22}")
    for case, runs in results.items():
        cells = [
            " / ".join(f"{run[key]:.1f}" if key == "region_us" else f"{run[key]:.0f}" for run in runs)
            for key in ("region_us", "batch1_ms", "batch16_ms")
        ]
        print(f"{case:<12} {cells[0]:>24} {cells[1]:>22} {cells[2]:>22}")


if __name__ == "__main__":
    main()
