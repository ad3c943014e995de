"""int8 recipes side by side on two models that compute the same function: a plain ViT and the same
ViT rewritten with outlier channels (``with_outlier_channels``: a few LayerNorm output channels 30
times larger in every block, divided back by the next linear layers), as trained transformers have.

For each model, recipe and activation width, one package is built in this process (as the child
build does) and its nsfw scores are compared with fp32 on the held-out set: the example photographs
and generated pictures. Prints one table; each build takes a minute or two with ViT-B.
``--values`` adds a third model: outliers in the attention's values too (``values=True``).

    python benchmarks/int8_outliers.py --architecture base --bits 8,7 [--values]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nsfw_space.model import quantize
from nsfw_space.model.device import cpu_description
from nsfw_space.model.loading import load_model_and_processor
from nsfw_space.model.optimize import Logits
from nsfw_space.model.preprocess import Preprocessor
from nsfw_space.model.smoothing import SMOOTHING, smooth
from nsfw_space.tools.synthetic import VIT_BASE, VIT_TINY, build_model_dir, with_outlier_channels

RECIPES = {  # label: (SmoothQuant's alpha, also between the value and output projections)
    "static (before)": (0.0, False),
    "static + LayerNorm smoothing": (SMOOTHING, False),
    "static + LayerNorm and value smoothing (now)": (SMOOTHING, True),
}


def measure(
    model_dir: Path, alpha: float, values: bool, reduce_range: bool, workdir: Path
) -> tuple[float, float, float]:
    """(largest nsfw-score difference on the photographs, on the generated pictures, build seconds)."""
    model, processor = load_model_and_processor(str(model_dir))
    preprocess = Preprocessor(processor)
    pictures = quantize.build_pictures(model, preprocess)
    started = time.perf_counter()
    smoothed = smooth(model, pictures.calibration, alpha, values=values) if alpha else model
    path = workdir / f"{model_dir.name}-{alpha}-{int(values)}-{int(reduce_range)}.pt2"
    quantize._compile_package(Logits(smoothed).eval(), pictures.calibration, path, reduce_range)
    seconds = time.perf_counter() - started
    forward = quantize._load(path)
    with torch.inference_mode():
        got = torch.softmax(forward(torch.from_numpy(pictures.held_out)).float(), -1).numpy()
    difference = np.abs(got - pictures.reference).max(axis=1)
    photo = np.array([not name.startswith("generated-") for name in pictures.names])
    return float(difference[photo].max()), float(difference[~photo].max()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=("base", "tiny"), default="base")
    parser.add_argument("--bits", default="8,7", help="activation widths to try: 8 (VNNI/AMX), 7 (AVX2)")
    parser.add_argument("--factor", type=float, default=30.0)
    parser.add_argument(
        "--values", action="store_true", help="also a model with outlier channels in the attention's values"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        architecture = VIT_BASE if args.architecture == "base" else VIT_TINY
        plain = build_model_dir(root / "plain", architecture=architecture)
        outliers = with_outlier_channels(plain, root / "outliers", factor=args.factor)
        models = [("plain", plain), (f"outliers x{args.factor:g}", outliers)]
        if args.values:
            both = with_outlier_channels(plain, root / "values", factor=args.factor, values=True)
            models.append((f"outliers x{args.factor:g}, values too", both))
        print(f"CPU: {cpu_description()}; torch {torch.__version__}; ViT-{args.architecture}/16")
        print(f"int8 activations now: {7 if quantize.needs_reduced_range() else 8} bits on this CPU")
        print("| model | recipe | activations | max diff, photos | max diff, generated | build s |")
        print("|---|---|---|---|---|---|")
        for bits in (int(b) for b in args.bits.split(",")):
            for label, model_dir in models:
                for recipe, (alpha, values) in RECIPES.items():
                    photos, generated, seconds = measure(model_dir, alpha, values, bits == 7, root)
                    verdict = "accepted" if max(photos, generated) <= quantize.TOLERANCE else "refused"
                    print(
                        f"| {label} | {recipe} | {bits}-bit | {photos:.4f} | {generated:.4f} | "
                        f"{seconds:.0f} ({verdict}) |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
