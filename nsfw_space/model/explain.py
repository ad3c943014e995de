"""Why a score: where in an image the model found its evidence for the NSFW label(s).

A class activation map from `torchcam <https://github.com/frgfm/torch-cam>`_ (Grad-CAM by
default, chosen by measuring: see the README and ``benchmarks/explain_methods.py``) on the patch
tokens entering every transformer block of any ViT-style classifier (ViT, DeiT, BEiT: patch tokens
after one or two prefix tokens), each patch keeping its largest value over the blocks: a model may
gather its evidence into the class token in any block, and a map of one block misses what was
gathered in another. The score explained is the NSFW log-odds: the
log-sum-exp of the NSFW labels' logits minus that of the others (for two labels, the logit
difference).

It runs on a private fp32 copy of the model, made on first use and kept: serving may be int8 or
bf16 (no gradients, or coarse ones), and hooks are never put on the model that serves, so an
explanation never slows down or changes a prediction running beside it.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from PIL import Image

from nsfw_space.config import DEFAULT_HEAT_LEVEL
from nsfw_space.errors import ExplainError
from nsfw_space.media import heat
from nsfw_space.media.heat import check_level
from nsfw_space.model.prediction import Prediction
from nsfw_space.model.torch_thread import on_passing_thread

METHODS = {  # the name callers use -> torchcam's class
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMpp",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
}
DEFAULT_METHOD = "gradcam"
DEFAULT_LEVEL = DEFAULT_HEAT_LEVEL
MARGIN = 0.75  # patches: a redacted region reaches this far past the heat's edge
HOW_TO_READ = (
    "Warm colours mark the regions whose content raised the nsfw score most, relative to this image "
    "(the hottest region is always the brightest, even in a safe image); dark blue regions did not raise it."
)


@dataclass(frozen=True, eq=False)
class Explanation:
    """Where the evidence for the NSFW label is in one image.

    ``grid`` is the map at the model's patch grid (e.g. 14x14), in [0, 1] relative to this image's
    hottest patch; ``heatmap`` is the same stretched to the image's own height x width; ``image``
    is the RGB image explained (for an animation or video, the frame that decided its score,
    ``frame``). ``prediction`` is the usual one, from the model as served.
    """

    prediction: Prediction
    grid: np.ndarray
    image: Image.Image = field(repr=False)
    method: str = DEFAULT_METHOD
    frame: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image explained."""
        return self.image.size

    @cached_property
    def heatmap(self) -> np.ndarray:
        """The map at the image's own size: a float32 (height, width) array in [0, 1]."""
        return heat.stretch(self.grid, self.size)

    def mask(
        self, level: float = DEFAULT_LEVEL, size: tuple[int, int] | None = None, margin: float = MARGIN
    ) -> np.ndarray:
        """True where the heat is at or above ``level``, grown by ``margin`` patches on every side
        (at ``size``, default the image's). The map has one value per patch, stretched between
        patch centres, so a region's edge is only known to within a patch: without a margin a
        redacted copy left the edges of what it meant to hide (see the README's figures)."""
        level = check_level(level)
        width, height = size or self.size
        heatmap = self.heatmap if (width, height) == self.size else heat.stretch(self.grid, (width, height))
        rows, columns = self.grid.shape
        reach = (round(margin * width / columns), round(margin * height / rows))
        return heat.grow(heatmap >= level, *reach)

    def share(self, level: float = DEFAULT_LEVEL, margin: float = MARGIN) -> float:
        """The share of the image (0 to 1) that a redacted copy at ``level`` blurs."""
        return float(self.mask(level, margin=margin).mean())

    def redact(
        self,
        image: Image.Image | None = None,
        level: float = DEFAULT_LEVEL,
        strength: float | None = None,
        margin: float = MARGIN,
    ) -> Image.Image:
        """A copy of ``image`` (default: the image explained) with the regions whose heat is at
        or above ``level`` blurred, ``margin`` patches beyond their edges included (Gaussian,
        radius ``strength`` pixels; default 4% of the longer side), every other pixel unchanged.
        Another size of the same picture is fine: the map is stretched to it."""
        target = self.image if image is None else image
        return heat.redact(target, self.mask(level, target.size, margin), strength)

    def overlay(self, *, blur: bool = True, size: int = heat.PREVIEW_SIZE) -> Image.Image:
        """The heat in colour over a preview of the image, **blurred** unless ``blur`` is False,
        with a colour scale along the bottom."""
        return heat.overlay(self.image, self.grid, blur=blur, size=size)

    def to_dict(
        self, threshold: float = 0.5, review_threshold: float | None = None, level: float = DEFAULT_LEVEL
    ) -> dict[str, Any]:
        """The prediction's fields (as ``/moderate`` returns them) plus ``method``, ``grid`` (rows
        of heat, 3 decimals), ``level`` and ``redacted_share`` (the share blurred at that level)."""
        result = self.prediction.to_dict(threshold, review_threshold)
        result.update(
            method=self.method,
            grid=np.round(self.grid, 3).tolist(),
            level=check_level(level),
            redacted_share=round(self.share(level), 4),
        )
        if self.frame:
            result["explained_frame"] = self.frame
        return result


class _Logits(torch.nn.Module):
    """A transformers classifier as torchcam wants it: pixels in, a logits tensor out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).logits


@dataclass(frozen=True)
class _Prepared:
    network: _Logits
    layers: list[str]  # torchcam's target layers: the norm that opens each transformer block
    grid: tuple[int, int]  # patch rows, columns


class Explainer:
    """Class activation maps for one classifier's model; safe to share between threads (one map at
    a time; predictions never wait for it). The fp32 copy is made on the first call."""

    def __init__(self, model: torch.nn.Module, nsfw_indices: list[int], method: str = DEFAULT_METHOD) -> None:
        self._source = model
        self.nsfw_indices = list(nsfw_indices)
        self.method = _checked(method)
        self._lock = threading.Lock()
        self._prepared: _Prepared | None = None

    def maps(self, pixels: np.ndarray, method: str | None = None) -> np.ndarray:
        """Preprocessed images (N, 3, H, W) -> maps (N, rows, columns) in [0, 1]."""
        method = _checked(method or self.method)
        first = next(self._source.parameters(), None)
        if first is None or first.device.type == "cpu":  # one lasting OpenMP pool (torch_thread)
            return on_passing_thread(self._maps, pixels, method)
        return self._maps(pixels, method)

    def _maps(self, pixels: np.ndarray, method: str) -> np.ndarray:
        import torchcam.methods as cams

        with self._lock:
            prepared = self._prepare()
            rows, columns = prepared.grid
            device = next(prepared.network.parameters()).device
            tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device)
            tensor.requires_grad_(True)  # the weights take no gradient; the activations need one

            def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
                prefix = tokens.shape[1] - rows * columns  # class (and distillation) tokens
                patches = tokens[:, prefix:, :]
                return patches.reshape(tokens.shape[0], rows, columns, -1).permute(0, 3, 1, 2)

            extractor_class = getattr(cams, METHODS[method])
            with (
                torch.enable_grad(),
                extractor_class(
                    prepared.network,
                    prepared.layers,
                    input_shape=tuple(tensor.shape[1:]),
                    reshape_transform=tokens_to_grid,
                ) as extractor,
            ):
                logits = prepared.network(tensor)
                # Unscaled, every block's map is in the same unit, a first-order share of the
                # log-odds: each patch keeps its largest over the blocks, and the result is scaled
                # to [0, 1] once (torchcam's per-map scaling would weigh a block with no evidence
                # like the one that has it).
                per_block = extractor(targets=self._nsfw_log_odds, scores=logits, normalized=False)
                fused = torch.stack([_finite(found) for found in per_block]).amax(dim=0)
            return _scaled(fused).cpu().numpy()

    def _nsfw_log_odds(self, logits: torch.Tensor) -> torch.Tensor:
        chosen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        chosen[self.nsfw_indices] = True
        nsfw = torch.logsumexp(logits[chosen], dim=-1)
        if chosen.all():
            return nsfw
        return nsfw - torch.logsumexp(logits[~chosen], dim=-1)

    def _prepare(self) -> _Prepared:
        if self._prepared is None:
            try:
                import torchcam.methods  # noqa: F401 - checked before the copy is made
            except ImportError:
                raise ExplainError(
                    "Explanations need torchcam: pip install torchcam (or nsfw-space[explain])."
                ) from None
            model = copy.deepcopy(self._source).float().eval()
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            network = _Logits(model)
            layers = ["model." + name for name in _target_layers(model)]
            self._prepared = _Prepared(network, layers, _patch_grid(model))
        return self._prepared


def _checked(method: str) -> str:
    if method not in METHODS:
        raise ExplainError(f"Unknown explanation method {method!r}; use one of {', '.join(METHODS)}.")
    return method


def _finite(maps: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """(N, rows, columns) -> each map in [0, 1], its peak at 1 (an all-zero map stays zero)."""
    maps = _finite(maps)
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(torch.float32).tiny), maps)


def _target_layers(model: torch.nn.Module) -> list[str]:
    """The first norm of each transformer block: the patch tokens as the block reads them (after
    the last block only the class token reaches the head, so no later layer sees the patches)."""
    blocks = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList)
        and len(module) > 0
        and name.split(".")[-1] in ("layer", "layers", "blocks")
    ]
    if not blocks:
        raise ExplainError(
            f"{type(model).__name__} has no list of transformer blocks to explain; explanations "
            "work with ViT-style image classifiers (ViT, DeiT, BEiT)."
        )
    name, layers = blocks[-1]
    found = []
    for index, block in enumerate(layers):
        norms = [
            child
            for child, module in block.named_modules()
            if child and isinstance(module, torch.nn.LayerNorm)
        ]
        if not norms:
            raise ExplainError(f"The blocks of {type(model).__name__} have no layer norm to explain from.")
        preferred = [child for child in norms if "before" in child or child.endswith("norm1")]
        found.append(f"{name}.{index}.{preferred[0] if preferred else norms[0]}")
    return found


def _patch_grid(model: torch.nn.Module) -> tuple[int, int]:
    config = model.config
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if size is None or patch is None:
        raise ExplainError(f"{type(model).__name__} does not say its image and patch sizes.")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return int(height) // int(patch_h), int(width) // int(patch_w)
