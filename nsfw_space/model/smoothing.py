"""Outlier channels and int8: SmoothQuant-style scale migration (Xiao et al. 2023).

Trained transformers have a few activation channels tens of times larger than the rest; with one
int8 scale per tensor they leave the other channels a handful of levels. Where a LayerNorm feeds
linear layers, a per-channel scale can move from the activations into the weights without
changing the function: the LayerNorm's output channel ``j`` is divided by ``s_j`` and the next
layers' input column ``j`` multiplied by it.
"""

from __future__ import annotations

import copy

import torch

SMOOTHING = 0.5  # SmoothQuant's alpha: how much of an outlier channel's size moves into the weights


def norm_linear_pairs(model: torch.nn.Module) -> list[tuple[torch.nn.LayerNorm, list[torch.nn.Linear]]]:
    """Each transformer block's LayerNorms with the linear layers they feed: the places where a
    per-channel scale can move from the activations into the weights without changing the
    function (transformers' ViT layout, old and new names)."""
    pairs = []
    for block in model.modules():
        before, after = getattr(block, "layernorm_before", None), getattr(block, "layernorm_after", None)
        if not isinstance(before, torch.nn.LayerNorm) or not isinstance(after, torch.nn.LayerNorm):
            continue
        attention = getattr(block, "attention", None)
        inner = getattr(attention, "attention", attention)  # transformers 4: attention.attention.query
        qkv = [getattr(inner, name, None) for name in ("q_proj", "k_proj", "v_proj")]
        if not all(isinstance(layer, torch.nn.Linear) for layer in qkv):
            qkv = [getattr(inner, name, None) for name in ("query", "key", "value")]
        mlp = getattr(block, "mlp", None) or getattr(block, "intermediate", None)
        first = getattr(mlp, "fc1", None) or getattr(mlp, "dense", None)
        if all(isinstance(layer, torch.nn.Linear) for layer in qkv):
            pairs.append((before, qkv))
        if isinstance(first, torch.nn.Linear):
            pairs.append((after, [first]))
    return pairs


def smooth(model: torch.nn.Module, calibration: torch.Tensor, alpha: float = SMOOTHING) -> torch.nn.Module:
    """A copy of ``model`` computing the same function, with each LayerNorm's output channels
    divided by ``s = max|x|^alpha / max|w|^(1 - alpha)`` and the next linear layers' input columns
    multiplied by ``s`` (SmoothQuant, Xiao et al. 2023): a channel tens of times larger than the
    rest, as trained transformers have, no longer sets the scale of a whole tensor."""
    smoothed = copy.deepcopy(model).float().eval()
    pairs = norm_linear_pairs(smoothed)
    if not pairs or alpha <= 0:
        return smoothed
    peaks: dict[int, torch.Tensor] = {}

    def record(index: int):
        def hook(_module, _inputs, output):
            peak = output.detach().abs().flatten(0, -2).amax(0)
            peaks[index] = torch.maximum(peaks[index], peak) if index in peaks else peak

        return hook

    handles = [norm.register_forward_hook(record(i)) for i, (norm, _) in enumerate(pairs)]
    try:
        with torch.inference_mode():
            for start in range(0, len(calibration), 8):
                smoothed(pixel_values=calibration[start : start + 8])
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for i, (norm, linears) in enumerate(pairs):
            weight_peak = torch.stack([layer.weight.abs().amax(0) for layer in linears]).amax(0)
            scale = peaks[i].clamp(min=1e-5).pow(alpha) / weight_peak.clamp(min=1e-5).pow(1 - alpha)
            scale = scale.clamp(min=1e-5)
            norm.weight.div_(scale)
            if norm.bias is not None:
                norm.bias.div_(scale)
            for layer in linears:
                layer.weight.mul_(scale)
    return smoothed
