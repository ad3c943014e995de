"""The model as it runs: on its device in its dtype with an fp32 head, behind one lock, with one
immutable forward plan that is swapped whole (never changed in place)."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nsfw_space.model.optimize import build_forward, eager_forward, resolve_mode
from nsfw_space.model.torch_thread import for_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardPlan:
    """How pixels become logits: one immutable object, swapped whole, so a reader never sees a
    single-image forward from one plan beside a batch forward (or padding) from another."""

    single: Callable[[torch.Tensor], torch.Tensor]
    batch: Callable[[torch.Tensor], torch.Tensor]
    pad_to: int = 0  # fixed-shape batch forward: chunks padded to this many rows (0: any shape)
    name: str = "none"
    input_dtype: torch.dtype | None = None  # None: the model's dtype


class Runner:
    """The model, its lock and its current plan: shared by a classifier and all its views.

    A faster plan that takes long to build is built on a thread of its own (:meth:`build_aside`)
    while the current plan keeps serving; the new plan replaces it in one assignment.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.lock = threading.Lock()
        eager = eager_forward(model)
        self.plan = ForwardPlan(eager, eager)
        self._builds: list[threading.Thread] = []

    def build_aside(self, name: str, build: Callable[[], None]) -> None:
        """Run ``build`` (which swaps in its plan when it has one) on a daemon thread."""

        def run() -> None:
            try:
                build()
            except Exception as err:  # a failed speed-up leaves the served plan as it is
                logger.warning("%s not used (%s); serving on with %s", name, err, self.plan.name)
                logger.debug("why %s failed", name, exc_info=True)

        thread = threading.Thread(target=run, name=f"nsfw-build-{name}", daemon=True)
        self._builds.append(thread)
        thread.start()

    def optimize(
        self,
        mode: str,
        device: torch.device,
        dtype: torch.dtype,
        input_size: tuple[int, int],
        batch_size: int,
    ) -> str:
        """Build and swap in the plan of optimisation ``mode``; returns the mode in use."""

        def build() -> str:
            wanted = resolve_mode(mode, device)
            height, width = input_size
            rows = 1 if wanted == "jit" else batch_size
            probe = torch.randn(rows, 3, height, width, generator=torch.Generator().manual_seed(0))
            forward, used = build_forward(self.model, wanted, probe.to(device, dtype))
            eager = eager_forward(self.model)
            self.plan = ForwardPlan(
                single=forward if used == "jit" else eager,
                batch=forward if used == "compile" else eager,
                pad_to=batch_size if used == "compile" else 0,
                name=used,
            )
            return used

        return for_device(device, build)

    def probabilities(self, pixels: np.ndarray, device: torch.device, dtype: torch.dtype) -> np.ndarray:
        """A batch of preprocessed images (N, 3, H, W) -> label probabilities (N, labels), all
        through the one plan read at the start (a swap meanwhile never mixes two plans)."""
        plan = self.plan
        dtype = plan.input_dtype or dtype
        if len(pixels) == 1 or not plan.pad_to:
            forward = plan.single if len(pixels) == 1 else plan.batch
            return self._run(forward, pixels, device, dtype)
        # A fixed-shape forward (compiled batches): whole chunks, the last one padded.
        chunks = []
        for start in range(0, len(pixels), plan.pad_to):
            chunk = pixels[start : start + plan.pad_to]
            count = len(chunk)
            if count < plan.pad_to:
                padding = np.zeros((plan.pad_to - count, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            chunks.append(self._run(plan.batch, chunk, device, dtype)[:count])
        return np.concatenate(chunks)

    def _run(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        pixels: np.ndarray,
        device: torch.device,
        dtype: torch.dtype,
    ) -> np.ndarray:
        def run() -> np.ndarray:  # on the torch thread for the CPU: one OpenMP pool (torch_thread)
            tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(device, dtype)
            with self.lock, torch.inference_mode():
                logits = forward(tensor)
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

        return for_device(device, run)

    def wait_for_builds(self, timeout: float | None = None) -> bool:
        """Wait for builds started with :meth:`build_aside`; True when none is still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._builds):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._builds = [thread for thread in self._builds if thread.is_alive()]
        return not self._builds


class _Float32Head(torch.nn.Module):
    """A linear classifier head run in fp32 on half-precision features."""

    def __init__(self, head: torch.nn.Linear) -> None:
        super().__init__()
        self.head = head.float()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.float())


def prepared_model(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype, *, copy_first: bool
) -> torch.nn.Module:
    """``model`` on ``device`` in ``dtype`` with an fp32 head, in eval mode. A caller's model is
    never changed: it is copied first whenever anything about it has to change."""
    head = getattr(model, "classifier", None)
    wrap_head = dtype != torch.float32 and isinstance(head, torch.nn.Linear)
    first = next(model.parameters(), None)
    moves = first is not None and (first.device != device or first.dtype != dtype)
    if copy_first and (wrap_head or moves or model.training):
        model = copy.deepcopy(model)
    model = model.to(device=device, dtype=dtype).eval()
    if wrap_head:
        # The head is tiny: in fp32 the scores keep their resolution (bf16 logits have 8 bits,
        # which made different images share the exact same score).
        model.classifier = _Float32Head(model.classifier)
    return model
