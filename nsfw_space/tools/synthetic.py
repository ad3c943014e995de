"""Models and images for tests and benchmarks, built offline (no hub access).

``build_model_dir`` saves a ViT whose classifier is laid along the direction in which its
features vary most over a set of varied images, so its scores really differ between images
(a random head scores every image nearly the same, which hides bugs).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from nsfw_space.media.samples import varied_image

__all__ = ["varied_image"]  # re-exported: tests and benchmarks draw their images from here

VIT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
VIT_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
PROCESSOR_CONFIG = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 1 / 255,
    "size": {"height": 224, "width": 224},
}


def build_model_dir(
    directory: str | Path,
    *,
    labels: tuple[str, ...] = ("normal", "nsfw"),
    architecture: dict[str, int] | None = None,
    spread: float = 1.5,
    seed: int = 0,
    spread_images: int = 48,
) -> Path:
    """Save a ViT image classifier (safetensors, config, preprocessor) into ``directory``; its head
    lies along the features' direction of most variance over ``spread_images`` generated pictures."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=224,
        patch_size=16,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **(architecture or VIT_TINY),
    )
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessorPil(**PROCESSOR_CONFIG)
    if spread:
        _spread_head(model, processor, labels, spread, seed, spread_images)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _spread_head(model, processor, labels, spread: float, seed: int, count: int = 48) -> None:
    import torch

    images = [varied_image(seed=1000 + i, size=(224, 224)) for i in range(count)]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = model.vit(pixel_values=pixels).last_hidden_state[:, 0]
        features = hidden.numpy().astype(np.float64)
    centered = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    direction = vt[0] / (np.std(centered @ vt[0]) + 1e-8)
    nsfw = [i for i, label in enumerate(labels) if label.lower() == "nsfw"] or [len(labels) - 1]
    weight = np.zeros((len(labels), features.shape[1]))
    bias = np.zeros(len(labels))
    for i in range(len(labels)):
        sign = 1.0 if i in nsfw else -1.0 / max(1, len(labels) - 1)
        weight[i] = sign * spread * direction
        bias[i] = -(features.mean(axis=0) @ weight[i])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        model.classifier.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def with_outlier_channels(
    source: str | Path,
    directory: str | Path,
    *,
    channels: int = 4,
    factor: float = 30.0,
    seed: int = 0,
    values: bool = False,
) -> Path:
    """Save beside ``source`` a model that computes the same function with the outliers trained
    transformers have: in every block, ``channels`` of the LayerNorm outputs that enter attention
    and the MLP are ``factor`` times larger, and the linear layers they feed divide them back
    (equal in exact arithmetic; what per-tensor int8 activations find hard). ``values``: also
    ``channels`` of each attention's values (so of its output, the output projection's input),
    divided back by the output projection."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from nsfw_space.model.smoothing import norm_linear_pairs, value_output_pairs

    model = AutoModelForImageClassification.from_pretrained(str(source), local_files_only=True).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm, linears in norm_linear_pairs(model):
            chosen = torch.randperm(norm.weight.numel(), generator=generator)[:channels]
            norm.weight[chosen] *= factor
            norm.bias[chosen] *= factor
            for layer in linears:
                layer.weight[:, chosen] /= factor
        for value, outputs in value_output_pairs(model) if values else []:
            chosen = torch.randperm(value.out_features, generator=generator)[:channels]
            value.weight[chosen] *= factor
            if value.bias is not None:
                value.bias[chosen] *= factor
            for layer in outputs:
                layer.weight[:, chosen] /= factor
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    AutoImageProcessor.from_pretrained(str(source), local_files_only=True).save_pretrained(directory)
    return directory


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """``image`` encoded as a JPEG."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_video(path: str | Path, frames: list[Image.Image], fps: int = 10, codec: str = "mpeg4") -> Path:
    """Encode RGB frames (even width and height) as a video with PyAV (mp4 or webm by suffix)."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_card(size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A clearly synthetic picture (stripes and the words TEST CARD): the one image the
    screenshots' stand-in model flags, so the page can show a blurred preview."""
    width, height = size
    image = Image.new("RGB", size, (255, 0, 200))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 40):
        draw.rectangle((x, 0, x + 19, height), fill=(255, 230, 0))
    draw.rectangle((width // 6, height // 3, 5 * width // 6, 2 * height // 3), fill=(0, 0, 0))
    draw.text((width // 6 + 20, height // 2 - 6), "SYNTHETIC TEST CARD", fill=(255, 255, 255))
    return image


def build_standin_model_dir(
    directory: str | Path, safe: list[Image.Image], flagged: list[Image.Image], seed: int = 0
) -> Path:
    """A tiny ViT whose head points from the ``safe`` images' features to the ``flagged`` ones',
    scaled so every safe image scores below 0.1 and every flagged one above 0.9: a stand-in whose
    scores look plausible in screenshots (they are still not the real model's)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(seed)
    labels = ("normal", "nsfw")
    config = ViTConfig(
        image_size=224,
        patch_size=16,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **VIT_TINY,
    )
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessorPil(**PROCESSOR_CONFIG)

    def features(images: list[Image.Image]) -> np.ndarray:
        pixels = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")[
            "pixel_values"
        ]
        with torch.no_grad():
            return model.vit(pixel_values=pixels).last_hidden_state[:, 0].numpy().astype(np.float64)

    safe_features, flagged_features = features(safe), features(flagged)
    direction = flagged_features.mean(axis=0) - safe_features.mean(axis=0)
    direction /= np.linalg.norm(direction) + 1e-12
    low, high = (safe_features @ direction).max(), (flagged_features @ direction).min()
    middle, margin = (low + high) / 2, max((high - low) / 2, 1e-6)
    scale = 3.0 / margin  # logit difference of at least +-6 at the nearest image on each side
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(np.stack([-direction, direction]) * scale / 2))
        model.classifier.bias.copy_(torch.tensor([middle * scale / 2, -middle * scale / 2]))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
