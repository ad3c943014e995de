"""Static int8 (PyTorch 2 export quantisation for x86, via torchao) against bf16, side by side.

    pip install torchao==0.18.0
    python benchmarks/int8_static.py [--workdir /tmp/nsfw-bench]

Exports the bench's ViT-B/16 (random weights of the card's architecture), calibrates on 32 of the
bench JPEGs, lowers it with torch.compile (frozen weights; AMX int8 where the CPU has it), and
prints model-only images/s at batch 16 and the largest nsfw score difference from fp32 on 16
other images, for bf16 eager and for int8.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/nsfw-bench")
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from nsfw_space import NSFWClassifier
    from nsfw_space.model.optimize import Logits
    from nsfw_space.tools.benchmark import ensure_benchmark_model, make_images

    workdir = Path(args.workdir)
    model_dir = ensure_benchmark_model(workdir)
    paths = make_images(workdir / "images", 64)
    fp32 = NSFWClassifier.from_pretrained(model_dir, precision="fp32", optimize="none")
    bf16 = NSFWClassifier.from_pretrained(model_dir, precision="bf16", optimize="none")
    pixels = np.concatenate([fp32.decode(path).pixels for path in paths])
    calibration, held_out = torch.from_numpy(pixels[:32]), pixels[32:48]

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(Logits(fp32.model).eval(), (calibration[:16],)).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for start in range(0, len(calibration), 16):
                prepared(calibration[start : start + 16])
        inductor_config.freezing = True
        with torch.no_grad():
            int8 = torch.compile(convert_pt2e(prepared))
            int8(torch.from_numpy(held_out))
    warmup = time.perf_counter() - started

    def int8_probabilities(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(int8(torch.from_numpy(batch)).float(), -1).numpy()

    def images_per_second(fn, batch: np.ndarray, seconds: float = 6.0) -> float:
        fn(batch)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            fn(batch)
            count += len(batch)
        return count / (time.perf_counter() - started)

    reference = fp32.probabilities(held_out)[:, 1]
    print(f"{'model only, ViT-B/16, batch 16':<36} {'images/s':>9} {'max |nsfw diff| vs fp32':>24}")
    for name, fn in (
        ("bf16 eager", bf16.probabilities),
        ("int8 static (PT2E + compile)", int8_probabilities),
    ):
        rate = images_per_second(fn, held_out)
        difference = np.abs(fn(held_out)[:, 1] - reference).max()
        print(f"{name:<36} {rate:>9.1f} {difference:>24.4f}")
    print(f"int8 export + calibration + compile took {warmup:.0f} s (not counted)")


if __name__ == "__main__":
    main()
