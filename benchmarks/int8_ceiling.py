"""How close the int8 ViT-B/16 runs to this CPU's own int8 matrix-multiply rate.

    python benchmarks/int8_ceiling.py [--workdir DIR] [--seconds 5]

Prints, side by side: the multiply-accumulates per second of oneDNN's quantised linear layer
(``torch.ops.onednn.qlinear_pointwise``: uint8 activations x int8 prepacked weights, the kernel
the int8 package calls) and of ``torch._int_mm`` (int8 x int8 -> int32) at the shapes of one
ViT-B/16 block for a batch of 16 (197 tokens each), and those of the whole int8 forward on a preprocessed batch of 16 (the package ``precision="int8"`` builds
or finds in the cache; about 17.6 G multiply-accumulates an image, the linear layers 16.7 G of
them). Their ratio bounds what any int8 recipe can still gain on this CPU while the linear layers
dominate: the rest of the forward (attention's softmax, LayerNorm, GELU, quantise and dequantise)
runs in what the multiplies leave. The best is taken over the quantised linear layer: on a CPU
without VNNI, ``torch._int_mm`` leaves oneDNN for a plain loop (1 G multiply-accumulates/s on an
AVX2-only EPYC, where the quantised linear layer ran at 97 to 144).

Beside them, the other int8 kernels at hand, at the same shapes: FBGEMM's (torch's
``quantized.linear`` with the ``fbgemm`` engine, written for AVX2 servers) and ONNX Runtime's
MLAS (``MatMulInteger``, uint8 x int8), with fp32 (``torch.nn.functional.linear``) for scale:
does a kernel the package does not use run faster here?
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

TOKENS, HIDDEN, MLP = 197, 768, 3072
LINEAR_MACS_PER_IMAGE = 12 * TOKENS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * MLP)  # qkv, out, mlp x12
ATTENTION_MACS_PER_IMAGE = 12 * 2 * TOKENS * TOKENS * HIDDEN  # q.k and p.v, 12 blocks


def int_mm_rate(rows: int, inner: int, cols: int, seconds: float) -> float:
    """Multiply-accumulates per second of torch._int_mm at (rows x inner) @ (inner x cols)."""
    import torch

    left = torch.randint(-64, 64, (rows, inner), dtype=torch.int8)
    right = torch.randint(-64, 64, (inner, cols), dtype=torch.int8)
    return _rate(lambda: torch._int_mm(left, right), rows * inner * cols, seconds)


def qlinear_rate(rows: int, inner: int, cols: int, seconds: float) -> float:
    """Multiply-accumulates per second of oneDNN's quantised linear layer at (rows x inner) @
    (inner x cols): uint8 activations with 7-bit values, int8 weights prepacked, fp32 out."""
    import torch

    activations = torch.randint(0, 128, (rows, inner), dtype=torch.uint8)
    packed = torch.ops.onednn.qlinear_prepack(
        torch.randint(-127, 128, (cols, inner), dtype=torch.int8), [rows, inner]
    )
    scales, zeros = torch.full((cols,), 0.01), torch.zeros(cols, dtype=torch.int64)

    def run() -> None:
        torch.ops.onednn.qlinear_pointwise(
            activations, 0.02, 0, packed, scales, zeros, None, 1.0, 0, torch.float32, "none", [None], ""
        )

    return _rate(run, rows * inner * cols, seconds)


def fbgemm_rate(rows: int, inner: int, cols: int, seconds: float) -> float:
    """Multiply-accumulates per second of FBGEMM's quantised linear layer (uint8 activations,
    per-channel int8 weights prepacked, uint8 out)."""
    import torch

    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        weights = torch.quantize_per_channel(
            torch.randn(cols, inner) * 0.05,
            torch.full((cols,), 0.002),
            torch.zeros(cols, dtype=torch.long),
            0,
            torch.qint8,
        )
        packed = torch.ops.quantized.linear_prepack(weights, torch.zeros(cols))
        activations = torch.quantize_per_tensor(torch.randn(rows, inner), 0.05, 64, torch.quint8)
        return _rate(
            lambda: torch.ops.quantized.linear(activations, packed, 0.1, 64), rows * inner * cols, seconds
        )
    finally:
        torch.backends.quantized.engine = engine


def onnxruntime_rate(rows: int, inner: int, cols: int, seconds: float) -> float:
    """Multiply-accumulates per second of ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32,
    MLAS), as many threads as torch uses; 0 where onnxruntime is not installed."""
    try:
        import numpy as np
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return 0.0
    import torch

    weights = np.random.default_rng(0).integers(-127, 128, (inner, cols)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "matmul",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [rows, inner])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [rows, cols])],
        [numpy_helper.from_array(weights, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    activations = np.random.default_rng(1).integers(0, 128, (rows, inner)).astype(np.uint8)
    return _rate(lambda: session.run(None, {"A": activations}), rows * inner * cols, seconds)


def fp32_rate(rows: int, inner: int, cols: int, seconds: float) -> float:
    """Multiply-accumulates per second of an fp32 linear layer, for scale."""
    import torch

    inputs, weights = torch.randn(rows, inner), torch.randn(cols, inner)
    return _rate(lambda: torch.nn.functional.linear(inputs, weights), rows * inner * cols, seconds)


def _rate(run, macs: int, seconds: float) -> float:
    for _ in range(3):
        run()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        count += 1
    return count * macs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the ViT-B/16 is built (kept for reuse)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time each measurement this long")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from nsfw_space import NSFWClassifier
    from nsfw_space.model.device import cpu_description
    from nsfw_space.tools.benchmark import ensure_benchmark_model, make_images, model_only_rate

    root = Path(args.workdir or tempfile.mkdtemp(prefix="nsfw-bench-"))
    model_dir = ensure_benchmark_model(root)
    rows = 16 * TOKENS
    shapes = {
        "qkv": (rows, HIDDEN, 3 * HIDDEN),
        "mlp up": (rows, HIDDEN, MLP),
        "mlp down": (rows, MLP, HIDDEN),
    }
    rates = {name: qlinear_rate(*shape, args.seconds) for name, shape in shapes.items()}
    others = {
        kernel: {name: measure(*shape, args.seconds) for name, shape in shapes.items()}
        for kernel, measure in (
            ("torch._int_mm", int_mm_rate),
            ("FBGEMM", fbgemm_rate),
            ("ONNX Runtime", onnxruntime_rate),
            ("fp32", fp32_rate),
        )
    }
    classifier = NSFWClassifier.from_pretrained(model_dir, precision="int8")
    classifier.wait_until_ready()
    images = model_only_rate(classifier, make_images(root / "ceiling", 16), 16, args.seconds)
    macs = images * (LINEAR_MACS_PER_IMAGE + ATTENTION_MACS_PER_IMAGE)
    best = max(rates.values())
    print(f"{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'G multiply-accumulates/s':<40} {'quantised linear':>16} " + " ".join(f"{k:>14}" for k in others)
    )
    for name, rate in rates.items():
        cells = " ".join(f"{others[kernel][name] / 1e9:14.0f}" for kernel in others)
        print(f"{name + ' ' + str(shapes[name]):<40} {rate / 1e9:16.0f} {cells}")
    print(
        f"ViT-B/16 forward ({classifier.precision}), batch 16: {images:.1f} img/s = {macs / 1e9:.0f} G multiply-accumulates/s, "
        f"{macs / best:.0%} of the best quantised linear rate; all at that rate: {best / macs * images:.1f} img/s"
    )


if __name__ == "__main__":
    main()
