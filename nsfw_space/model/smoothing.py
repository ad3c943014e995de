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


def value_output_pairs(model: torch.nn.Module) -> list[tuple[torch.nn.Linear, list[torch.nn.Linear]]]:
    """Each attention's value projection with the output projection it feeds. The attention's
    output is a weighted mean of the values, channel by channel, so a scale moves from the output
    projection's input into the value projection's output rows without changing the function:
    the one other place, beside the LayerNorms, where an outlier channel can be moved."""
    pairs = []
    for block in model.modules():
        attention = getattr(block, "attention", None)
        if attention is None or getattr(block, "layernorm_before", None) is None:
            continue
        value, output = getattr(attention, "v_proj", None), getattr(attention, "o_proj", None)
        if not isinstance(value, torch.nn.Linear):  # transformers 4: attention.attention.value
            value = getattr(getattr(attention, "attention", None), "value", None)
            output = getattr(getattr(attention, "output", None), "dense", None)
        linears = isinstance(value, torch.nn.Linear) and isinstance(output, torch.nn.Linear)
        if linears and value.out_features == output.in_features:
            pairs.append((value, [output]))
    return pairs


def smooth(
    model: torch.nn.Module, calibration: torch.Tensor, alpha: float = SMOOTHING, *, values: bool = False
) -> torch.nn.Module:
    """A copy of ``model`` computing the same function, with each LayerNorm's output channels
    divided by ``s = max|x|^alpha / max|w|^(1 - alpha)`` and the next linear layers' input columns
    multiplied by ``s`` (SmoothQuant, Xiao et al. 2023): a channel tens of times larger than the
    rest, as trained transformers have, no longer sets the scale of a whole tensor. ``values``:
    the same between each attention's value and output projections (:func:`value_output_pairs`),
    ``x`` then being the output projection's input."""
    smoothed = copy.deepcopy(model).float().eval()
    pairs = norm_linear_pairs(smoothed) + (value_output_pairs(smoothed) if values else [])
    if not pairs or alpha <= 0:
        return smoothed
    peaks: dict[int, torch.Tensor] = {}

    def record(index: int):
        def hook(_module, inputs):
            peak = inputs[0].detach().abs().flatten(0, -2).amax(0)
            peaks[index] = torch.maximum(peaks[index], peak) if index in peaks else peak

        return hook

    handles = [linears[0].register_forward_pre_hook(record(i)) for i, (_, linears) in enumerate(pairs)]
    try:
        with torch.inference_mode():
            for start in range(0, len(calibration), 8):
                smoothed(pixel_values=calibration[start : start + 8])
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for i, (producer, linears) in enumerate(pairs):
            weight_peak = torch.stack([layer.weight.abs().amax(0) for layer in linears]).amax(0)
            scale = peaks[i].clamp(min=1e-5).pow(alpha) / weight_peak.clamp(min=1e-5).pow(1 - alpha)
            scale = scale.clamp(min=1e-5)
            # a LayerNorm's weight is one per channel; a linear layer's output channel is a row
            producer.weight.div_(scale if producer.weight.dim() == 1 else scale[:, None])
            if producer.bias is not None:
                producer.bias.div_(scale)
            for layer in linears:
                layer.weight.mul_(scale)
    return smoothed
