"""The MLP's GELU in the int8 ViT-B/16: fused into the first linear layer (what the package builds)
against computed apart.

    python benchmarks/int8_gelu.py [--workdir DIR] [--rounds 8]

The x86 quantiser and Inductor fuse ``fc1 -> GELU`` into one oneDNN call with GELU as a post-op.
On an AVX2-only EPYC, oneDNN's quantised linear layer at fc1's shape (batch 16) ran at 115 to 122
G multiply-accumulates/s without a post-op and at 92 to 99 with the exact GELU one, so GELU apart
(written as ``x/2 * (1 + erf(x/sqrt 2))``, which Inductor does not fuse into the linear layer but
computes in a C++ kernel of its own, dequantising and quantising on the way) might be faster. This
builds the package three ways (the same smoothing, calibration and attention as the build): as the
build does, with GELU apart (the quantiser then quantises its products too), and with GELU apart and
left unquantised (``set_module_name_qconfig(..., None)``, as the build leaves the head), for two
ViT-B/16 that compute the same function (the bench model, and the same with outlier channels in
the LayerNorm outputs and the attention's values) and prints side by side: the batch-16 forward
(median of alternating rounds), batch 1, the kernel time of the linear layers and of the GELU
kernels (PyTorch's profiler, kernel profiling on), and the largest score difference from fp32 on
the build's held-out pictures and example photographs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed
os.environ.setdefault("TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE", "1")  # kernels named in the profile
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def gelu_apart(model) -> int:
    """Replace each MLP's GELU module with the same function written out (erf); returns how many."""
    import torch

    class ErfGelu(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.5 * (1.0 + torch.erf(x * 0.7071067811865476))

    replaced = 0
    for module in model.modules():
        if hasattr(module, "fc1") and hasattr(module, "activation_fn"):
            module.activation_fn = ErfGelu()
            replaced += 1
    return replaced


def kernel_milliseconds(forward, pixels) -> tuple[float, float, float]:
    """Kernel time of one forward: the quantised linear layers, the GELU kernels, everything."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        forward(pixels)
    events = [event for event in prof.key_averages() if event.key.startswith(("aoti_", "graph_"))]
    linear = sum(event.self_cpu_time_total for event in events if "qlinear" in event.key)
    gelu = sum(event.self_cpu_time_total for event in events if "erf" in event.key)
    return linear / 1000, gelu / 1000, sum(event.self_cpu_time_total for event in events) / 1000


class _Unquantised:
    """Module names the quantiser leaves in fp32, passed to it through torchao's ``prepare_pt2e``
    (which ``quantize._compile_package`` calls), for one build at a time."""

    def __init__(self) -> None:
        import torchao.quantization.pt2e.quantize_pt2e as pt2e

        self.names: list[str] = []
        self.original = pt2e.prepare_pt2e

        def prepare(graph, quantizer):
            for name in self.names:
                quantizer.set_module_name_qconfig(name, None)
            return self.original(graph, quantizer)

        pt2e.prepare_pt2e = prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the ViT-B/16s are built (kept for reuse)")
    parser.add_argument("--rounds", type=int, default=8, help="timed batch-16 forwards of each package")
    args = parser.parse_args()

    import numpy as np
    import torch

    from nsfw_space import NSFWClassifier
    from nsfw_space.media.budgets import keep_buffers_in_heap
    from nsfw_space.model import quantize
    from nsfw_space.model.device import cpu_description
    from nsfw_space.model.optimize import Logits
    from nsfw_space.model.smoothing import smooth
    from nsfw_space.tools.benchmark import ensure_benchmark_model, ensure_outlier_model

    keep_buffers_in_heap()  # as every CPU classifier serves: the batch's buffers reused
    unquantised = _Unquantised()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="nsfw-bench-"))
    plain = ensure_benchmark_model(root)
    outliers = ensure_outlier_model(root, values=True)
    print(f"{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| weights | GELU | batch 16, ms (median) | batch 1, ms (median) | linear layers, ms | "
        "GELU kernels, ms | all kernels, ms | max score diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, model_dir in (("plain ViT-B/16", plain), ("outliers in LayerNorms and values", outliers)):
        clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32", optimize="none")
        pictures = quantize.build_pictures(clf.model, clf.preprocess)
        calibration, held_out, reference = pictures.calibration, pictures.held_out, pictures.reference
        batch = torch.from_numpy(quantize.generated_pixels(clf.preprocess, 16, first_seed=0))
        forwards, differences = {}, {}
        with tempfile.TemporaryDirectory() as work:
            for name in ("fused (the package)", "apart (erf)", "apart (erf), left fp32"):
                smoothed = smooth(clf.model, calibration, values=True)
                quantize.attention_for_int8(smoothed)
                if name.startswith("apart") and not gelu_apart(smoothed):
                    raise SystemExit("no MLP with fc1 and activation_fn found: transformers changed")
                unquantised.names = []
                if name.endswith("left fp32"):
                    unquantised.names = [
                        f"model.{module}"
                        for module, _ in smoothed.named_modules()
                        if module.endswith("activation_fn")
                    ]
                path = Path(work) / f"{len(forwards)}.pt2"
                quantize._compile_package(
                    Logits(smoothed).eval(), calibration, path, threads=torch.get_num_threads()
                )
                forwards[name] = quantize._load(path)
                with torch.inference_mode():
                    got = torch.softmax(forwards[name](torch.from_numpy(held_out)).float(), -1).numpy()
                differences[name] = float(np.abs(got - reference).max())
            sixteen: dict[str, list[float]] = {name: [] for name in forwards}
            one: dict[str, list[float]] = {name: [] for name in forwards}
            with torch.inference_mode():
                for forward in forwards.values():
                    forward(batch), forward(batch[:1])
                for _ in range(args.rounds):  # alternating, so the machine's drift hits both
                    for name, forward in forwards.items():
                        for pixels, times in ((batch, sixteen[name]), (batch[:1], one[name])):
                            started = time.perf_counter()
                            forward(pixels)
                            times.append(1000 * (time.perf_counter() - started))
            for name, forward in forwards.items():
                linear, gelu, total = kernel_milliseconds(forward, batch)
                print(
                    f"| {label} | {name} | {statistics.median(sixteen[name]):.0f} | "
                    f"{statistics.median(one[name]):.0f} | {linear:.0f} | {gelu:.0f} | {total:.0f} | "
                    f"{differences[name]:.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
