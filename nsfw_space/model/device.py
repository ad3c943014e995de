"""The one place that chooses the device and the numeric precision."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TypeVar

import torch

from nsfw_space.errors import ConfigError
from nsfw_space.modes import Precision

logger = logging.getLogger(__name__)

PRECISIONS = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
F = TypeVar("F", bound=Callable)


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else the CPU; anything else as given."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"Unknown device {requested!r}; use auto, cpu or cuda.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {requested!r} was asked for but no CUDA GPU is available; use auto or cpu."
        )
    return device


def reported_cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


ONEDNN_LIMIT = "ONEDNN_MAX_CPU_ISA"  # oneDNN's own setting: the newest instructions its kernels may use
ATEN_LIMIT = "ATEN_CPU_CAPABILITY"  # torch's: the vector width of ATen's and Inductor's own kernels
MKL_LIMIT = "MKL_ENABLE_INSTRUCTIONS"  # MKL's: the fp32 products' instructions (speed only)
# the flag families (name prefixes) a oneDNN limit puts out of reach; a limit not named here
# (DEFAULT, the AMX and AVX10.2 levels, a misspelling oneDNN ignores) leaves every flag usable
_BEYOND = {
    **dict.fromkeys(("sse41", "avx"), ("avx2", "avx512", "avx_vnni", "amx")),
    "avx2": ("avx512", "avx_vnni", "amx"),
    **dict.fromkeys(("avx2_vnni", "avx2_vnni_2"), ("avx512", "amx")),
    "avx512_core": ("avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx"),
    "avx512_core_vnni": ("avx512_bf16", "avx512_fp16", "avx_vnni", "amx"),
    "avx512_core_bf16": ("avx512_fp16", "avx_vnni", "amx"),
    **dict.fromkeys(("avx512_core_fp16", "avx10_1_512"), ("amx",)),
}


def isa_limits() -> dict[str, str]:
    """The ISA limits set in the environment (oneDNN's, ATen's and MKL's), by setting name."""
    names = (ONEDNN_LIMIT, ATEN_LIMIT, MKL_LIMIT)
    return {name: os.environ[name].strip() for name in names if os.environ.get(name, "").strip()}


def cpu_flags() -> set[str]:
    """The CPU feature flags the matrix products may use: those Linux reports, less those that
    ``ONEDNN_MAX_CPU_ISA`` puts out of oneDNN's reach (it runs the int8 and bf16 products, so it
    decides whether int8 dot products and bf16 are there). ``ONEDNN_MAX_CPU_ISA=AVX2`` on any
    newer x86 CPU gives an AVX2-only CPU's int8 arithmetic, saturation included."""
    flags = reported_cpu_flags()
    beyond = _BEYOND.get(isa_limits().get(ONEDNN_LIMIT, "").lower(), ())
    return {flag for flag in flags if not flag.startswith(beyond)} if beyond else flags


ISA_FLAGS = {"AVX2": "avx2", "AVX512-BF16": "avx512_bf16", "AVX512-VNNI": "avx512_vnni", "AMX": "amx_tile"}


def cpu_model() -> str:
    """The CPU's model name as Linux reports it (the machine type elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_description(flags: set[str] | None = None) -> str:
    """``'AMD EPYC, 2 cores; AVX2 yes, AVX512-BF16 no, AVX512-VNNI no, AMX no'``: what a speed
    figure needs beside it."""
    flags = cpu_flags() if flags is None else flags
    isa = ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for name, flag in ISA_FLAGS.items())
    limits = ", ".join(f"{name}={value}" for name, value in isa_limits().items())
    return f"{cpu_model()}, {os.cpu_count()} cores; {isa}" + (f" (limited by {limits})" if limits else "")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16) and oneDNN may use it."""
    if ONEDNN_LIMIT in isa_limits():  # torch's probes see the hardware, not the limit
        return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for probe in probes:
        check = getattr(torch.cpu, probe, None)  # torch's own (private) capability probes
        if check is not None:
            try:
                if check():
                    return True
            except RuntimeError:
                pass
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def resolve_precision(requested: str, device: torch.device) -> torch.dtype:
    """The dtype the model's weights are held in: ``auto`` -> fp16 on CUDA, bf16 on CPUs with
    bf16 matrix units, fp32 elsewhere; ``int8`` -> fp32 (the int8 forward is built from it, see
    :func:`int8_choice`)."""
    requested = (requested or "auto").strip().lower()
    if requested == Precision.INT8:
        if device.type != "cpu":
            raise ConfigError(f"int8 runs on the CPU; on {device.type} use fp16 (or auto).")
        return torch.float32
    if requested == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if requested not in PRECISIONS:
        raise ConfigError(f"Unknown precision {requested!r}; use {', '.join(Precision.values())}.")
    if requested == "fp16" and device.type == "cpu":
        logger.warning("fp16 on the CPU is slow on most processors; bf16 or fp32 is usually faster")
    return PRECISIONS[requested]


def int8_choice(requested: str, device: torch.device, optimize: str = "auto") -> str | None:
    """Whether to use int8: ``"always"`` when asked for, ``"if-faster"`` for ``auto`` on the CPU
    (it is then used only where it was measured faster than the plain forward), else None.
    ``optimize=none`` (no speed-ups) means no int8 for ``auto``."""
    requested = (requested or "auto").strip().lower()
    if requested == Precision.INT8:
        return "always"
    optimize = (optimize or "auto").strip().lower()
    if requested == "auto" and device.type == "cpu" and optimize != "none":
        return "if-faster"
    return None


def on_zero_gpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the GPU exists only inside ``spaces.GPU`` calls)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true")


def gpu_task(fn: F) -> F:
    """Run ``fn`` inside ``spaces.GPU`` on a ZeroGPU Space; a no-op elsewhere."""
    if not on_zero_gpu():
        return fn
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn)
