"""Does the quantised graph, run as it is before the C++ compile, foretell the compiled package's check?

    python benchmarks/int8_early_check.py [--workdir DIR] [--models tiny,tiny-outliers,vitb,vitb-outliers]

A build quantises and calibrates the model in seconds, then spends most of its time (a minute or
two for a ViT-B/16 on two cores) compiling the package, and only then checks it against fp32.
The quantised graph runs as it is too (quantise and dequantise around fp32 products: the same
arithmetic the int8 kernels do, up to rounding), so a build can check it first and refuse early.
This prints, per set of weights, side by side: the largest score difference from fp32 of the
graph as it is and of the compiled package on the build's held-out pictures (generated pictures
and the example photographs), the largest difference between the two, and the seconds each step
took. The models are built here: a tiny ViT and a ViT-B/16 of the card's architecture (random
weights, a head laid along their features' spread), each also rewritten with outlier channels
(``with_outlier_channels``: the same function, 4 channels 30 times larger entering every
attention and MLP block and in each attention's values).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

MODELS = ("tiny", "tiny-outliers", "vitb", "vitb-outliers")


def model_dir(name: str, workdir: Path) -> Path:
    """The weights called ``name``, built under ``workdir`` once."""
    from nsfw_space.tools.synthetic import VIT_BASE, build_model_dir, with_outlier_channels

    folder = workdir / name
    if (folder / "config.json").is_file():
        return folder
    base = name.removesuffix("-outliers")
    if name != base:
        return with_outlier_channels(model_dir(base, workdir), folder, values=True)
    return build_model_dir(folder, architecture=VIT_BASE if base == "vitb" else None, spread_images=16)


def measure(folder: Path, package: Path) -> dict[str, float]:
    import numpy as np
    import torch

    from nsfw_space.model import quantize
    from nsfw_space.model.loading import load_model_and_processor
    from nsfw_space.model.optimize import Logits
    from nsfw_space.model.preprocess import Preprocessor
    from nsfw_space.model.smoothing import smooth

    model, processor = load_model_and_processor(str(folder))
    pictures = quantize.build_pictures(model, Preprocessor(processor))
    held_out = torch.from_numpy(pictures.held_out)

    def scores(forward) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(forward(held_out).float(), -1).numpy()

    started = time.perf_counter()
    smoothed = smooth(model, pictures.calibration, values=True)
    quantize.attention_for_int8(smoothed)
    quantized = quantize._quantize(Logits(smoothed).eval(), pictures.calibration)
    quantised_at = time.perf_counter()
    as_it_is = scores(quantized)
    checked_at = time.perf_counter()
    quantize._compile(quantized, pictures.calibration, package)
    compiled_at = time.perf_counter()
    compiled = scores(quantize._load(package))
    return {
        "graph as it is": float(np.abs(as_it_is - pictures.reference).max()),
        "compiled": float(np.abs(compiled - pictures.reference).max()),
        "between them": float(np.abs(as_it_is - compiled).max()),
        "quantise s": quantised_at - started,
        "early check s": checked_at - quantised_at,
        "compile s": compiled_at - checked_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nsfw-early-check")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nsfw_space.model import quantize
    from nsfw_space.model.device import cpu_description

    print(cpu_description())
    print(
        f"activations: {7 if quantize.needs_reduced_range() else 8}-bit; the check's bound {quantize.TOLERANCE}"
    )
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    columns = ("graph as it is", "compiled", "between them", "quantise s", "early check s", "compile s")
    print(f"{'weights':<15}" + "".join(f"{c:>16}" for c in columns))
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}")
        args.workdir.mkdir(parents=True, exist_ok=True)
        row = measure(model_dir(name, args.workdir), args.workdir / f"{name}.pt2")
        print(
            f"{name:<15}"
            + "".join(f"{row[c]:>16.4f}" if not c.endswith(" s") else f"{row[c]:>16.1f}" for c in columns)
        )


if __name__ == "__main__":
    main()
