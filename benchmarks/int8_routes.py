"""int8 routes side by side, in one run: PT2E (torchao x86 quantizer + inductor), ONNX Runtime
static QDQ, OpenVINO with NNCF, against the fp32 paths we already have.

    pip install torchao==0.18.0 onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2 \
        openvino==2026.4.1 nncf==3.4.0
    python benchmarks/int8_routes.py [--workdir /tmp/nsfw-bench] [--skip PT2E,OpenVINO]

Same ViT-B/16 as ``bench`` (the card's architecture, random weights with a varied head), calibrated on
32 of the bench JPEGs, checked on 16 others. Prints, per route: build time (export, calibration,
compile), model-only images/s at batch 1 and 16, and the largest nsfw-score difference from fp32.
The CPU it ran on is printed first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def images_per_second(fn: Callable, batch, seconds: float) -> float:
    fn(batch)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn(batch)
        count += len(batch)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/nsfw-bench")
    parser.add_argument("--skip", default="", help="comma-separated routes to leave out")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import numpy as np
    import torch

    from nsfw_space import NSFWClassifier
    from nsfw_space.model.device import cpu_description
    from nsfw_space.model.optimize import Logits
    from nsfw_space.tools.benchmark import ensure_benchmark_model, make_images

    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    workdir = Path(args.workdir)
    model_dir = ensure_benchmark_model(workdir)
    paths = make_images(workdir / "images", 48)
    fp32 = NSFWClassifier.from_pretrained(model_dir, precision="fp32", optimize="none")
    pixels = np.concatenate([fp32.decode(path).pixels for path in paths])
    calibration, held_out = pixels[:32], pixels[32:48]
    reference = fp32.probabilities(held_out)[:, 1]
    softmax = lambda logits: torch.softmax(torch.as_tensor(logits).float(), -1).numpy()  # noqa: E731

    routes: dict[str, Callable[[], Callable]] = {}

    def eager():
        return fp32.probabilities

    def jit():
        return NSFWClassifier.from_pretrained(model_dir, precision="fp32", optimize="jit").probabilities

    def bf16():
        return NSFWClassifier.from_pretrained(model_dir, precision="bf16", optimize="none").probabilities

    def pt2e():
        """The route the package ships (nsfw_space.model.quantize): PT2E static, AOTInductor."""
        from nsfw_space.model import quantize

        path = Path(tempfile.mkdtemp()) / "model.pt2"
        quantize._compile_package(Logits(fp32.model).eval(), torch.from_numpy(calibration), path)
        forward = quantize._load(path)

        def run(batch):
            with torch.no_grad():
                return softmax(forward(torch.from_numpy(batch)))

        return run

    def onnx_path(folder: Path) -> Path:
        path = folder / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Logits(fp32.model).eval(),
                (torch.from_numpy(calibration[:2]),),
                str(path),
                input_names=["pixels"],
                output_names=["logits"],
                dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        return path

    def ort_session(path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda batch: softmax(session.run(None, {"pixels": batch})[0])

    def ort_fp32():
        return ort_session(onnx_path(Path(tempfile.mkdtemp())))

    def ort_int8():
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        folder = Path(tempfile.mkdtemp())
        source = onnx_path(folder)
        prepped = folder / "prepped.onnx"
        quant_pre_process(str(source), str(prepped))

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"pixels": calibration[i : i + 8]} for i in range(0, 32, 8)])

            def get_next(self):
                return next(self.batches, None)

        target = folder / "int8.onnx"
        quantize_static(
            str(prepped),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
        return ort_session(target)

    def openvino_model(quantize: bool):
        import openvino as ov

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ov.convert_model(
                Logits(fp32.model).eval(), example_input=torch.from_numpy(calibration[:2])
            )
        if quantize:
            import nncf

            dataset = nncf.Dataset([calibration[i : i + 8] for i in range(0, 32, 8)])
            model = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=32)
        compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        return lambda batch: softmax(compiled(batch)[0])

    routes = {
        "fp32 eager (none)": eager,
        "fp32 jit": jit,
        "bf16 eager": bf16,
        "int8 PT2E + AOTInductor (ours)": pt2e,
        "fp32 ONNX Runtime": ort_fp32,
        "int8 ONNX Runtime QDQ": ort_int8,
        "fp32 OpenVINO": lambda: openvino_model(False),
        "int8 OpenVINO + NNCF": lambda: openvino_model(True),
    }
    header = f"{'route (model only, ViT-B/16)':<32} {'build s':>8} {'img/s b1':>9} {'img/s b16':>10} {'max |diff|':>11}"
    print(header)
    for name, build in routes.items():
        if any(word in name for word in skip):
            continue
        started = time.perf_counter()
        try:
            fn = build()
        except Exception as err:  # noqa: BLE001 - a route that fails is reported, not fatal
            print(f"{name:<32} failed: {type(err).__name__}: {str(err)[:120]}")
            continue
        built = time.perf_counter() - started
        single = images_per_second(fn, held_out[:1], args.seconds / 2)
        batch = images_per_second(fn, held_out, args.seconds)
        difference = np.abs(fn(held_out)[:, 1] - reference).max()
        print(f"{name:<32} {built:>8.1f} {single:>9.1f} {batch:>10.1f} {difference:>11.4f}", flush=True)


if __name__ == "__main__":
    main()
