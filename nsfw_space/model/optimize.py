"""Graph-level speed-ups for the forward pass, each checked against the plain model before use.

- ``jit``: single images (the latency a person waits for) run through a TorchScript trace, frozen,
  with oneDNN fusion (matmul+GELU and friends fused, weights prepacked). Ready in about a second;
  on the 2-core AMX machine a ViT-B/16 image took 39-47 ms instead of 58 ms. Batches stay eager:
  oneDNN builds and keeps kernels and buffers for every new batch shape (we measured resident
  memory grow from 0.8 to 2.6 GB over batch sizes 1-8 and 16), for no clear gain in throughput.
- ``compile``: batches run through ``torch.compile`` with frozen weights, padded to one shape.
  Fastest on big batches, but the warm-up takes tens of seconds on a small CPU: for long scans.
- ``none``: the plain eager model.

``auto`` means ``jit`` on the CPU and ``none`` on a GPU. A speed-up whose scores differ from the
plain model's by more than ``TOLERANCE`` on a probe input, or that fails to build, is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from nsfw_space.errors import ConfigError
from nsfw_space.modes import Optimization

logger = logging.getLogger(__name__)

MODES = tuple(Optimization.values())
TOLERANCE = 0.01  # the accuracy promised everywhere: scores within 0.01 of the model card's snippet
Forward = Callable[[torch.Tensor], torch.Tensor]


def resolve_mode(mode: str, device: torch.device) -> str:
    mode = (mode or "auto").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"Unknown optimisation {mode!r}; use {', '.join(MODES)}.")
    if mode == "auto":
        return "jit" if device.type == "cpu" else "none"
    return mode


def eager_forward(model: torch.nn.Module) -> Forward:
    """The plain model, pixels in, logits out."""
    return Logits(model)


def build_forward(model: torch.nn.Module, mode: str, probe: torch.Tensor) -> tuple[Forward, str]:
    """Return ``(forward, mode actually used)``; falls back to eager if the speed-up misbehaves.

    ``probe`` is an input of the one shape the forward will be used with.
    """
    eager = eager_forward(model)
    if mode == "none":
        return eager, "none"
    try:
        with torch.inference_mode():
            fast = _jit(model, probe) if mode == "jit" else _compile(model)
            for batch in (probe, probe.flip(0)):
                expected = torch.softmax(eager(batch).float(), -1)
                got = torch.softmax(fast(batch).float(), -1)
                difference = (expected - got).abs().max().item()
                if difference > TOLERANCE:
                    raise ValueError(f"scores differ by {difference:.4f} from the plain model")
    except Exception as err:  # noqa: BLE001 - any failure means: keep the plain model
        logger.warning("not using %s (%s); running the plain model", mode, err)
        return eager, "none"
    logger.info("forward pass optimised with %s", mode)
    return fast, mode


class Logits(torch.nn.Module):
    """``model(pixel_values=x).logits`` as a module of one tensor, for tracing and export."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).logits


def _jit(model: torch.nn.Module, probe: torch.Tensor) -> Forward:
    import warnings

    torch.jit.enable_onednn_fusion(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
        traced = torch.jit.trace(Logits(model).eval(), probe, check_trace=False, strict=False)
        frozen = torch.jit.freeze(traced)
        for _ in range(3):  # the profiling executor specialises and fuses over the first calls
            frozen(probe)
    return frozen


def _compile(model: torch.nn.Module) -> Forward:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    compiled = torch.compile(model)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        return compiled(pixel_values=pixels).logits

    return forward
