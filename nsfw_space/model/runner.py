"""The model as it runs: on its device in its dtype with an fp32 head, behind one lock, with one
immutable forward plan that is swapped whole (never changed in place)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nsfw_space.model.optimize import eager_forward


@dataclass(frozen=True)
class ForwardPlan:
    """How pixels become logits: one immutable object, swapped whole, so a reader never sees a
    single-image forward from one plan beside a batch forward (or padding) from another."""

    single: Callable[[torch.Tensor], torch.Tensor]
    batch: Callable[[torch.Tensor], torch.Tensor]
    pad_to: int = 0  # fixed-shape batch forward: chunks padded to this many rows (0: any shape)
    name: str = "none"


class Runner:
    """The model, its lock and its current plan: shared by a classifier and all its views."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.lock = threading.Lock()
        eager = eager_forward(model)
        self.plan = ForwardPlan(eager, eager)


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
