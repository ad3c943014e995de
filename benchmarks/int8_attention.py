"""Attention in the int8 ViT-B/16: fp32 (the quantiser leaves it so) against bf16 products.

    python benchmarks/int8_attention.py [--workdir DIR] [--rounds 4]

Builds the int8 package twice for each of two ViT-B/16 that compute the same function (the bench
model, and the same with a few channels 30 times larger entering every block, the outliers trained
models have): once with the model's own attention (fp32 ``scaled_dot_product_attention``), once
with :func:`nsfw_space.model.quantize.bf16_matmul_attention` (its two products in bf16, the
softmax in fp32), what the build uses where the CPU multiplies bf16 in hardware. Prints side by
side: images per second at batch 1 and 16, attention's share of the batch-16 forward (PyTorch's
profiler, kernel profiling on), and the largest nsfw-score difference from fp32 on the held-out
pictures and example photographs (the build's own check; it refuses above 0.01).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed
os.environ.setdefault("TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE", "1")  # kernels named in the profile
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ATTENTION_KERNELS = ("scaled_dot_product", "bmm", "softmax")


def attention_share(forward, pixels) -> float:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        forward(pixels)
    events = [event for event in prof.key_averages() if event.key.startswith(("aoti_", "graph_"))]
    total = sum(event.self_cpu_time_total for event in events)
    attention = sum(
        event.self_cpu_time_total for event in events if any(name in event.key for name in ATTENTION_KERNELS)
    )
    return attention / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the ViT-B/16 is built (kept for reuse)")
    parser.add_argument("--rounds", type=int, default=4, help="timed forwards per batch size")
    args = parser.parse_args()

    import numpy as np
    import torch

    from nsfw_space import NSFWClassifier
    from nsfw_space.model import quantize
    from nsfw_space.model.device import cpu_description
    from nsfw_space.model.optimize import Logits
    from nsfw_space.model.smoothing import smooth
    from nsfw_space.tools.benchmark import ensure_benchmark_model, ensure_outlier_model

    root = Path(args.workdir or tempfile.mkdtemp(prefix="nsfw-bench-"))
    plain = ensure_benchmark_model(root)
    outliers = ensure_outlier_model(root, values=False)
    print(f"{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| weights | attention | img/s batch 1 | img/s batch 16 | attention share (batch 16) | max score diff |"
    )
    print("|---|---|---|---|---|---|")
    for label, model_dir in (("plain ViT-B/16", plain), ("outlier channels", outliers)):
        clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32", optimize="none")
        pictures = quantize.build_pictures(clf.model, clf.preprocess)
        calibration, held_out, reference = pictures.calibration, pictures.held_out, pictures.reference
        batch = quantize.generated_pixels(clf.preprocess, 16, first_seed=0)
        for bf16 in (False, True):
            smoothed = smooth(clf.model, calibration)
            used = quantize.attention_for_int8(smoothed, bf16=bf16)
            with tempfile.TemporaryDirectory() as work:
                path = Path(work) / "model.pt2"
                quantize._compile_package(Logits(smoothed).eval(), calibration, path)
                forward = quantize._load(path)
                with torch.inference_mode():
                    got = torch.softmax(forward(torch.from_numpy(held_out)).float(), -1).numpy()

                def run(pixels, forward=forward):  # timed as the build times it
                    return forward(torch.from_numpy(pixels))

                one = quantize._images_per_second(run, batch[:1], args.rounds * 4)
                sixteen = quantize._images_per_second(run, batch, args.rounds)
                share = attention_share(forward, torch.from_numpy(batch))
            difference = float(np.abs(got - reference).max())
            print(
                f"| {label} | {used} | {one:.1f} | {sixteen:.1f} | {share:.0%} | {difference:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
