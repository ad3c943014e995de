"""The browser's copy of the served model: ONNX (``pixel_values`` in, ``logits`` out, a dynamic batch
axis), quantised to 8 bits for WASM, in the layout transformers.js reads::

    config.json  preprocessor_config.json  onnx/model_quantized.onnx  check.json

Before export the model is smoothed (:func:`nsfw_space.model.smoothing.smooth`: the same function,
with the few large activation channels of trained transformers moved into the LayerNorms and, for
those in the attention's values, into the value projections: with outliers there too a ViT-B/16 was
0.0366 off with the LayerNorms alone and refused, 0.0152 with both), and
weights are quantised per output channel; activations are quantised per tensor at run time.
Weights are unsigned 8-bit, like the activations: an x86 CPU without VNNI (AVX2 only) sums
uint8 x int8 products in pairs in 16 bits, which saturate, so with signed weights the check run
here measured that CPU's arithmetic, not the browser's (WASM sums exactly): the tiny test model
was 0.0288 off on an AVX2-only EPYC and refused, 0.0098 with unsigned weights. Unsigned x
unsigned products are summed exactly by every x86 kernel and by WASM, so the check measures
what the browser computes on any machine (ViT-B/16: 0.0142, and 0.0141 with outlier channels,
against 0.0137 and 0.0133 with signed weights on a VNNI CPU).
Measured on a ViT-B/16 with outlier channels x30: 0.032 off without smoothing, 0.013 with it
(``benchmarks/private_mode.py``). The quantised scores are checked against the PyTorch model on the example photographs and on
generated pictures; a model that differs by more than ``TOLERANCE`` is refused (no files).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TOLERANCE = 0.02  # the most a probability may move between PyTorch and the browser's model
OPSET = 18
MODEL_FILE = "onnx/model_quantized.onnx"
CHECK_FILE = "check.json"
RECIPE = "onnx-opset18-smooth-values-dynamic-uint8-per-channel-4"  # part of the cache key: a new recipe builds again


class BrowserModelRefused(RuntimeError):
    """The exported model was not written; the message says why (a failed check, a missing tool)."""


def missing_requirement() -> str | None:
    """Why the browser model cannot be built here, or None when it can."""
    for module, package in (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("onnxscript", "onnxscript")):
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed (pip install {package})"
    return None


def export_browser_model(model: Any, processor: Any, out_dir: Path, tolerance: float = TOLERANCE) -> dict:
    """Write the browser model of ``model`` (a transformers image classifier in fp32) and
    ``processor`` into ``out_dir``; returns what the check measured. Raises BrowserModelRefused."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nsfw_space.model.preprocess import Preprocessor
    from nsfw_space.model.quantize import calibration_pixels, held_out_set
    from nsfw_space.model.smoothing import smooth

    reason = missing_requirement()
    if reason:
        raise BrowserModelRefused(reason)
    started = time.monotonic()
    out_dir = Path(out_dir)
    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    preprocess = Preprocessor(processor)
    smoothed = smooth(model, torch.from_numpy(calibration_pixels(preprocess)), values=True)
    full = out_dir / "fp32.onnx"
    _export(smoothed, full)
    quantised = out_dir / MODEL_FILE
    with _quiet_root_logger():  # onnxruntime's quantiser logs every tensor on the root logger
        quantize_dynamic(str(full), str(quantised), weight_type=QuantType.QUInt8, per_channel=True)
    full.unlink()
    for leftover in out_dir.glob("fp32.onnx*"):  # external data written beside it, if any
        leftover.unlink()

    names, pixels = held_out_set(preprocess)
    with torch.inference_mode():
        reference = torch.softmax(model(pixel_values=torch.from_numpy(pixels)).logits.float(), -1).numpy()
    scores = _onnx_probabilities(quantised, pixels)
    worst = np.abs(scores - reference).max(axis=1)
    # a label may only change where PyTorch itself was nearly undecided (top two within 2 x tolerance)
    ordered = np.sort(reference, axis=1)
    decided = ordered[:, -1] - ordered[:, -2] > 2 * tolerance
    flipped = (scores.argmax(1) != reference.argmax(1)) & decided
    check = {
        "recipe": RECIPE,
        "tolerance": tolerance,
        "worst": round(float(worst.max()), 6),
        "by_image": {name: round(float(value), 6) for name, value in zip(names, worst, strict=True)},
        "same_label": not bool(flipped.any()),
        "model_bytes": quantised.stat().st_size,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    if check["worst"] > tolerance or not check["same_label"]:
        raise BrowserModelRefused(
            f"8-bit browser scores differ from PyTorch by {check['worst']:.4f} (more than {tolerance})"
            + ("" if check["same_label"] else " and a label changed where PyTorch was sure")
        )
    model.config.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / CHECK_FILE).write_text(json.dumps(check, indent=1))
    logger.info(
        "browser model written (%.1f MB, worst difference %.4f)", check["model_bytes"] / 1e6, check["worst"]
    )
    return check


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _export(model: Any, path: Path) -> None:
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=pixel_values).logits

    size = int(getattr(model.config, "image_size", 224))
    channels = int(getattr(model.config, "num_channels", 3))
    example = torch.zeros(2, channels, size, size)
    torch.onnx.export(
        Logits(model).eval(),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch_size", min=1, max=256)},),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def _onnx_probabilities(path: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [session.run(["logits"], {"pixel_values": pixels[i : i + 8]})[0] for i in range(0, len(pixels), 8)]
    ).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def read_check(folder: Path) -> dict | None:
    """The check of a finished browser model in ``folder``, or None when there is none."""
    try:
        check = json.loads((Path(folder) / CHECK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return check if (Path(folder) / MODEL_FILE).is_file() else None
