"""int8 on the CPU: PyTorch 2 export quantisation (torchao's x86 quantizer, static, per-channel
weights), compiled ahead of time with AOTInductor into one package file, cached on disk.

Why this route: ``benchmarks/int8_routes.py`` runs it beside ONNX Runtime static QDQ and OpenVINO
with NNCF on the same ViT-B/16; on each CPU we measured it was the fastest int8 (README, "Speed").
Building takes a minute or two (export, calibration on generated pictures, C++ compile), so it is
done once per model, torch/torchao version and CPU and kept under the cache folder; a restart loads
the package in well under a second.

Every package is checked before use: on held-out generated pictures its nsfw scores must stay
within ``TOLERANCE`` of the fp32 model's (the fp32 scores are kept beside the package, so a cached
package is checked again at every load without the fp32 model). One that fails is not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nsfw_space.media.samples import example_photos, varied_image
from nsfw_space.model.device import ATEN_LIMIT, cpu_flags, cpu_has_fast_bf16, isa_limits
from nsfw_space.model.optimize import TOLERANCE, Forward, Logits
from nsfw_space.model.smoothing import smooth

logger = logging.getLogger(__name__)

# change when the recipe changes: old packages are then not used
ROUTE = "pt2e-x86-static-smooth-values-aoti-6"
CALIBRATION_IMAGES = 32  # generated pictures, beside crops of the example photographs
HELD_OUT_IMAGES = 8  # generated pictures held out for the check, beside the example photographs
MAX_BATCH = 256
# The quantised graph runs as it is (quantise and dequantise around fp32 products) in seconds; the
# C++ compile that follows is 40 s of a ViT-B/16's build on two cores. A graph whose scores stray
# further than EARLY_MARGIN times TOLERANCE from fp32 is refused before it is compiled; the
# compiled package is then checked against TOLERANCE itself. Compiling moved the scores by up to
# half of TOLERANCE: 0.0051 and 0.0044 between graph and package on two ViT-B/16 of one function
# (one plain, one with outlier channels), 0.0000 on the tiny test models
# (``benchmarks/int8_early_check.py``, AVX2-only EPYC); a margin of 2 leaves twice the most seen.
EARLY_MARGIN = 2.0
CACHE_SETTING = "NSFW_SPACE_CACHE_DIR"


class Int8Unavailable(RuntimeError):
    """int8 cannot be built or used here; the message says why."""


def default_cache_dir() -> Path:
    """``$NSFW_SPACE_CACHE_DIR``, else ``$XDG_CACHE_HOME/nsfw_space``, else ``~/.cache/nsfw_space``."""
    configured = os.environ.get(CACHE_SETTING, "").strip()
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nsfw_space"


def missing_requirement() -> str | None:
    """Why int8 cannot be built on this machine, or None when it can."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao)"
    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        return "no C++ compiler was found (AOTInductor needs one: apt-get install g++)"
    return None


def unpack_problem(package: Path) -> str | None:
    """Why AOTInductor could not unpack ``package`` (built or still to build) to load it, or None.
    It unpacks the whole library (the package's size: 89 MB for a ViT-B/16) into ``$TMPDIR``, else
    ``/tmp``; where that folder was missing, read-only or full, the package was taken for a broken
    one and deleted."""
    folder = os.environ.get("TMPDIR") or "/tmp"
    if not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
        return f"the temporary folder {folder} is missing or not writable (int8 packages are unpacked there to load; set TMPDIR)"
    if package.is_file():  # its size is known once it is built
        free, needed = _free_bytes(folder), package.stat().st_size
        if free < needed:
            return (
                f"the temporary folder {folder} has {free / 2**20:.0f} MB free, and the int8 package "
                f"needs {needed / 2**20:.0f} MB there to load (set TMPDIR)"
            )
    return None


def _free_bytes(folder: str) -> int:
    return shutil.disk_usage(folder).free


def needs_reduced_range() -> bool:
    """True on CPUs without int8 dot-product units (VNNI, AMX): there the u8 x s8 products are
    summed in 16 bits and saturate, so activations get 7 bits. Measured on an AVX2-only EPYC with
    the test model: nsfw scores off by 0.055 with 8 bits, 0.008 with 7."""
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()


_digests: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of every parameter and buffer (names, dtypes, shapes, bytes): the model's identity.
    Kept per model until a tensor of it changes in place (torch counts those in ``_version``), so
    the int8 key and the browser model's key at one start read the weights once."""
    tensors = sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items())
    versions = tuple(tensor._version for _, tensor in tensors)
    known = _digests.get(model)
    if known is not None and known[0] == versions:
        return known[1]
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in tensors:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    _digests[model] = (versions, digest.hexdigest())
    return digest.hexdigest()


def cache_key(name: str, parts: list[str]) -> str:
    """A cache folder's name: the model's readable last name and a digest of what the build depends on."""
    readable = "".join(ch if ch.isalnum() else "-" for ch in name.rsplit("/", 1)[-1])[:40] or "model"
    return f"{readable}-{hashlib.blake2b('|'.join(parts).encode(), digest_size=10).hexdigest()}"


def package_key(model: torch.nn.Module, name: str) -> str:
    """The cache key: the weights, torch and torchao versions, the CPU's usable flags (see
    :func:`cpu_flags`), torch's ISA limit where one is set, the threads and the recipe."""
    import torchao

    parts = [
        ROUTE,
        weights_digest(model),
        torch.__version__,
        torchao.__version__,
        hashlib.blake2b(" ".join(sorted(cpu_flags())).encode(), digest_size=8).hexdigest(),
        str(torch.get_num_threads()),
    ]
    aten_limit = isa_limits().get(ATEN_LIMIT)
    if aten_limit:  # the package's own kernels are written for that width
        parts.append(f"{ATEN_LIMIT}={aten_limit.lower()}")
    return cache_key(name, parts)


def generated_pixels(preprocess: Callable[[Any], np.ndarray], count: int, first_seed: int) -> np.ndarray:
    """``count`` generated pictures of varied colour, shapes and noise, preprocessed (N, 3, H, W)."""
    sizes = [(320, 240), (240, 320), (400, 300), (300, 300)]
    images = [varied_image(first_seed + i, sizes[i % len(sizes)]) for i in range(count)]
    return np.stack([preprocess(image) for image in images])


def calibration_pixels(preprocess: Callable[[Any], np.ndarray]) -> np.ndarray:
    """What int8's activation ranges are measured on: generated pictures and, where the example
    photographs are at hand, four crops and a mirror image of each (never the held-out originals)."""
    from PIL import Image, ImageOps

    crops = []
    for path in example_photos():
        with Image.open(path) as opened:
            photo = opened.convert("RGB")
        width, height = photo.size
        half = (width // 2, height // 2)
        for left, top in ((0, 0), (half[0], 0), (0, half[1]), (half[0], half[1])):
            crops.append(photo.crop((left, top, left + half[0], top + half[1])))
        crops.append(ImageOps.mirror(photo))
    generated = generated_pixels(preprocess, CALIBRATION_IMAGES, first_seed=0)
    if not crops:
        return generated
    return np.concatenate([generated, np.stack([preprocess(image) for image in crops])])


def held_out_set(
    preprocess: Callable[[Any], np.ndarray], names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """The check's inputs, named: generated pictures (``generated-N``) and the example photographs
    (by file name). ``names`` picks those of an earlier build (the photographs still at hand)."""
    photos = {path.name: path for path in example_photos()}
    wanted = (
        list(names)
        if names is not None
        else [
            *(f"generated-{i}" for i in range(HELD_OUT_IMAGES)),
            *sorted(photos),
        ]
    )
    generated = generated_pixels(preprocess, HELD_OUT_IMAGES, first_seed=10_000)
    chosen, rows = [], []
    for name in wanted:
        if name.startswith("generated-") and name[10:].isdigit() and int(name[10:]) < HELD_OUT_IMAGES:
            rows.append(generated[int(name[10:])])
        elif name in photos:
            from PIL import Image

            with Image.open(photos[name]) as opened:
                rows.append(preprocess(opened.convert("RGB")))
        else:
            continue
        chosen.append(name)
    return chosen, np.stack(rows)


@dataclass(frozen=True)
class BuildPictures:
    """What a build quantises with and checks against: the calibration pixels, the held-out
    pictures (named as :func:`held_out_set` names them) and fp32's scores for them."""

    calibration: torch.Tensor
    names: list[str]
    held_out: np.ndarray
    reference: np.ndarray


def build_pictures(fp32_model: torch.nn.Module, preprocess: Callable[[Any], np.ndarray]) -> BuildPictures:
    """The build's calibration and check pictures for ``fp32_model``, with fp32's softmax scores on
    the held-out ones (what every package is checked against; the benchmarks compare on the same)."""
    calibration = torch.from_numpy(calibration_pixels(preprocess))
    names, held_out = held_out_set(preprocess)
    with torch.inference_mode():
        reference = torch.softmax(Logits(fp32_model).eval()(torch.from_numpy(held_out)).float(), -1).numpy()
    return BuildPictures(calibration, names, held_out, reference)


@dataclass(frozen=True)
class Int8Package:
    """A checked int8 forward and what was measured when it was built."""

    forward: Forward
    path: Path
    meta: dict[str, Any]

    @property
    def faster(self) -> bool:
        """True when int8 was measured faster than the plain forward on this CPU."""
        return self.meta.get("int8_images_per_s", 0.0) > self.meta.get("plain_images_per_s", float("inf"))


def load_package(folder: Path, preprocess: Callable[[Any], np.ndarray]) -> Int8Package | None:
    """A cached package, checked again on the held-out pictures; None when there is none (or a
    broken or failing one, which is then removed so it is rebuilt)."""
    path, meta_path = folder / "model.pt2", folder / "meta.json"
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        forward = _load(path)
        names = meta.get("held_out") or [f"generated-{i}" for i in range(len(meta["reference"]))]
        reference = dict(zip(names, meta["reference"], strict=True))
        chosen, held_out = held_out_set(preprocess, names)
        _check(forward, held_out, np.asarray([reference[name] for name in chosen], dtype=np.float32))
    except Exception as err:  # noqa: BLE001 - a package we cannot trust is rebuilt, never used
        logger.warning("cached int8 package %s not used (%s); it will be rebuilt", folder, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return Int8Package(forward, path, meta)


def build_package(
    fp32_model: torch.nn.Module,
    workdir: Path,
    preprocess: Callable[[Any], np.ndarray],
    plain: Callable[[np.ndarray], Any],
    *,
    timing_threads: int | None = None,
    reduce_range: bool | None = None,
) -> dict[str, Any]:
    """Quantise ``fp32_model`` (smoothed first, see :func:`smooth`), compile it, check it against
    fp32 on photographs and generated pictures, time it against ``plain`` (the forward served
    meanwhile, with ``timing_threads``) and write it to ``workdir / "package"``, for the caller to
    publish in one rename (a half-written package is never seen). Returns its meta; raises
    Int8Unavailable, or ValueError when the check refuses it. Called in the build's child process
    (``builds``)."""
    reason = missing_requirement()
    if reason:
        raise Int8Unavailable(reason)
    pictures = build_pictures(fp32_model, preprocess)
    package = Path(workdir) / "package"
    package.mkdir(parents=True, exist_ok=True)
    reduce_range = needs_reduced_range() if reduce_range is None else reduce_range
    started = time.perf_counter()
    # a copy: the served model keeps its attention
    smoothed = smooth(fp32_model, pictures.calibration, values=True)
    attention = attention_for_int8(smoothed)
    quantized = _quantize(Logits(smoothed).eval(), pictures.calibration, reduce_range)
    early = _check(quantized, pictures.held_out, pictures.reference, bound=TOLERANCE * EARLY_MARGIN)
    _compile(quantized, pictures.calibration, package / "model.pt2", timing_threads)
    build_seconds = time.perf_counter() - started
    forward = _load(package / "model.pt2")
    difference = _check(forward, pictures.held_out, pictures.reference)
    if timing_threads:
        torch.set_num_threads(timing_threads)
    meta = {
        "route": ROUTE,
        "torch": torch.__version__,
        "held_out": pictures.names,
        "reference": pictures.reference.tolist(),
        "max_difference": difference,
        "max_difference_before_compiling": early,
        "attention": attention,
        "activation_bits": 7 if reduce_range else 8,
        "build_seconds": round(build_seconds, 1),
        "int8_images_per_s": _images_per_second(
            lambda batch: forward(torch.from_numpy(batch)), pictures.held_out
        ),
        "plain_images_per_s": _images_per_second(plain, pictures.held_out),
    }
    (package / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


BF16_ATTENTION = "nsfw_space_bf16_matmuls"
OWN_ATTENTION = "the model's own (fp32)"


def bf16_matmul_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention with its two matrix products in bf16 (fp32 sums) and the softmax in fp32: what the
    int8 package runs where the CPU multiplies bf16 in hardware. The x86 quantiser leaves attention
    in fp32, and there fp32 attention took 35 % of the int8 forward of ViT-B/16 at batch 16
    (``benchmarks/int8_attention.py``); its products in bf16 ran 3.8 and 5.1 times as fast."""
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    half = torch.bfloat16
    scores = torch.matmul(query.to(half), key.to(half).transpose(2, 3)).float() * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1)
    output = torch.matmul(weights.to(half), value.to(half)).float()
    return output.transpose(1, 2).contiguous(), None


def attention_for_int8(model: torch.nn.Module, bf16: bool | None = None) -> str:
    """Switch ``model`` (a copy for the build) to bf16-product attention where the CPU multiplies
    bf16 in hardware (``bf16``: force either way); returns the attention used: BF16_ATTENTION, or
    OWN_ATTENTION where the model's own stays (no bf16 units, or a model without transformers'
    attention switch)."""
    switch = getattr(model, "set_attn_implementation", None)
    if switch is None or not (cpu_has_fast_bf16() if bf16 is None else bf16):
        return OWN_ATTENTION
    from transformers import AttentionInterface

    AttentionInterface.register(BF16_ATTENTION, bf16_matmul_attention)
    switch(BF16_ATTENTION)
    return BF16_ATTENTION


def _quantize(logits: torch.nn.Module, calibration: torch.Tensor, reduce_range: bool | None = None) -> Any:
    """Export ``logits``, quantise it (torchao's x86 quantizer, the head left fp32) and calibrate
    it on ``calibration``: the quantised graph, which runs as it is (the compiled kernels' arithmetic
    in plain fp32 operations, quantise and dequantise around each product) before it is compiled."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export's and torchao's deprecation chatter
        graph = torch.export.export(logits, (calibration[:4],), dynamic_shapes=({0: _batch_dim()},)).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(
            x86.get_default_x86_inductor_quantization_config(
                reduce_range=needs_reduced_range() if reduce_range is None else reduce_range
            )
        )
        if isinstance(getattr(logits.model, "classifier", None), torch.nn.Linear):
            # the head stays fp32 (as in bf16): tiny, and where the scores get their resolution
            quantizer.set_module_name_qconfig("model.classifier", None)
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for start in range(0, len(calibration), 8):
                prepared(calibration[start : start + 8])
        return convert_pt2e(prepared)


def _compile(quantized: Any, example: torch.Tensor, path: Path, threads: int | None = None) -> None:
    """Compile the quantised graph into the package at ``path`` (AOTInductor: a C++ compile, most
    of a build's time). ``threads``: how many threads the package's own kernels (softmax,
    LayerNorm, quantising) are written for, the serving process's count; Inductor otherwise writes
    them for the build's own (one thread in the build's child on two cores, where the same package
    measured 25.0 img/s at build against 27.5 with its kernels written for two)."""
    import torch._inductor.config as inductor_config

    frozen, written_for = inductor_config.freezing, inductor_config.cpp.threads
    inductor_config.freezing = True  # weights become constants: prepacked int8 kernels
    inductor_config.cpp.threads = threads or written_for
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(quantized, (example[:4],), dynamic_shapes=({0: _batch_dim()},))
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    finally:
        inductor_config.freezing, inductor_config.cpp.threads = frozen, written_for


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _compile_package(
    logits: torch.nn.Module,
    calibration: torch.Tensor,
    path: Path,
    reduce_range: bool | None = None,
    threads: int | None = None,
) -> None:
    """Export, quantise, calibrate and compile ``logits`` into the package at ``path`` (the
    benchmarks' one step; a build checks the quantised graph between the two)."""
    _compile(_quantize(logits, calibration, reduce_range), calibration, path, threads)


def _load(path: Path) -> Forward:
    with _loading:
        before = _unpacked_packages()
        runner = torch._inductor.aoti_load_package(str(path))
        # AOTInductor unpacks the package (the whole .so with its weights: 89 MB for a ViT-B/16)
        # into $TMPDIR/aotinductor_XXXXXX and removes it only when the runner is destroyed: a
        # process killed while serving int8 (SIGKILL, an OOM kill, a build child at its server's
        # death) left it there for good. The library is loaded by then, so it goes now.
        for folder in _unpacked_packages() - before:
            shutil.rmtree(folder, ignore_errors=True)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.float32:
            pixels = pixels.float()
        if len(pixels) <= MAX_BATCH:
            return runner(pixels)
        return torch.cat([runner(pixels[i : i + MAX_BATCH]) for i in range(0, len(pixels), MAX_BATCH)])

    return forward


_loading = threading.Lock()  # one load at a time, so each knows which unpacked folder is its own
_UNPACKED_PREFIX = "aotinductor_"


def _unpacked_packages() -> set[Path]:
    """The folders AOTInductor unpacked packages into whose libraries this process has mapped
    (from ``/proc/self/maps``; empty where there is none, as off Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return set()
    folders = set()
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or _UNPACKED_PREFIX not in fields[5]:
            continue
        mapped = Path(fields[5].removesuffix(" (deleted)"))
        for parent in mapped.parents:
            if parent.name.startswith(_UNPACKED_PREFIX):
                folders.add(parent)
                break
    return {folder for folder in folders if folder.is_dir()}


def _check(
    forward: Forward, held_out: np.ndarray, reference: np.ndarray, bound: float | None = None
) -> float:
    """The largest score difference from ``reference``; raises ValueError above TOLERANCE, or above
    ``bound`` for the quantised graph before it is compiled (see EARLY_MARGIN)."""
    with torch.inference_mode():
        got = torch.softmax(forward(torch.from_numpy(held_out)).float(), -1).numpy()
    if got.shape != reference.shape:
        raise ValueError(f"the package answers {got.shape}, the model {reference.shape}")
    difference = float(np.abs(got - reference).max())
    if bound is not None and not difference <= bound:
        raise ValueError(
            f"int8 scores differ from fp32 by {difference:.4f} before compiling (more than {bound:g}, "
            f"where the compiled package may differ by {TOLERANCE})"
        )
    if bound is None and not difference <= TOLERANCE:
        raise ValueError(f"int8 scores differ from fp32 by {difference:.4f} (more than {TOLERANCE})")
    return difference


def _images_per_second(forward: Callable[[np.ndarray], Any], pixels: np.ndarray, rounds: int = 2) -> float:
    with torch.inference_mode():
        forward(pixels)
        started = time.perf_counter()
        for _ in range(rounds):
            forward(pixels)
    return round(rounds * len(pixels) / (time.perf_counter() - started), 2)


def describe(meta: dict[str, Any], names: Sequence[str] = ("int8_images_per_s", "plain_images_per_s")) -> str:
    """``'int8 6.1 img/s vs plain 2.9 img/s'``: the measurement a choice was made on."""
    int8, plain = (meta.get(name, 0.0) for name in names)
    return f"int8 {int8:.1f} img/s vs plain {plain:.1f} img/s (measured here at build)"
