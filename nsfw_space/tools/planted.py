"""A task whose answer is known to be somewhere: a high-contrast texture square planted in a picture
means ``nsfw``, its absence ``normal``. A tiny ViT trained on it (seconds on a CPU) must look at the
square, so an explanation of its score can be checked against where the square really is.

Used by the tests and by ``benchmarks/explain_methods.py``; built offline, no hub access.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nsfw_space.media.samples import varied_image

logger = logging.getLogger(__name__)

IMAGE_SIZE = 128  # the small ViT's input: an 8x8 grid of 16-pixel patches
PATCH = 16
SQUARE = 48  # the planted square's side, in pixels of a 128-pixel picture (three patches)


@dataclass(frozen=True)
class Planted:
    """A generated picture and, when it holds one, the planted square as (left, top, right, bottom)."""

    image: Image.Image
    box: tuple[int, int, int, int] | None

    @property
    def is_nsfw(self) -> bool:
        return self.box is not None


def planted_picture(
    seed: int, planted: bool, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE), on_grid: bool = False
) -> Planted:
    """A varied background; with ``planted``, a checkerboard square of magenta and green cells at
    a random place. Half of all pictures, of either kind, also get a plain grey square of the same
    size somewhere: a square as such says nothing, so the model must learn the texture (and its
    evidence is where the texture is, not "no grey square here"). ``on_grid`` puts the checkerboard
    at a random place on the model's patch grid, so each patch is wholly in it or out of it."""
    rng = np.random.default_rng(10_000 + seed)
    width, height = size
    side = SQUARE * width // IMAGE_SIZE
    pixels = np.asarray(varied_image(seed, size)).copy()

    def place(step: int = 1) -> tuple[int, int]:
        return (
            int(rng.integers(0, (width - side) // step + 1)) * step,
            int(rng.integers(0, (height - side) // step + 1)) * step,
        )

    if rng.random() < 0.5:  # the distractor, painted first so a checkerboard may cover it
        left, top = place()
        pixels[top : top + side, left : left + side] = int(rng.integers(60, 200))
    box = None
    if planted:
        left, top = place(PATCH * width // IMAGE_SIZE if on_grid else 1)
        y, x = np.mgrid[0:side, 0:side]
        cell = max(2, side // 8)
        pattern = ((x // cell + y // cell) % 2 * 255).astype(np.uint8)
        pixels[top : top + side, left : left + side] = np.stack([pattern, 255 - pattern, pattern], axis=-1)
        box = (left, top, left + side, top + side)
    return Planted(Image.fromarray(pixels), box)


def planted_set(count: int, start: int = 0, on_grid: bool = False) -> list[Planted]:
    """``count`` pictures, every other one with a checkerboard."""
    return [planted_picture(start + index, index % 2 == 1, on_grid=on_grid) for index in range(count)]


def train_planted_model(directory: str | Path, *, steps: int = 600, seed: int = 0, lr: float = 3e-4) -> Path:
    """Train a tiny ViT (labels normal, nsfw) on planted pictures and save it with its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    from nsfw_space.model.preprocess import Preprocessor
    from nsfw_space.tools.synthetic import PROCESSOR_CONFIG

    torch.manual_seed(seed)
    labels = ("normal", "nsfw")
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        hidden_size=64,
        num_hidden_layers=4,  # with 2 the class token gathers the evidence in the first block
        num_attention_heads=4,
        intermediate_size=128,
    )
    model = ViTForImageClassification(config)
    processor = ViTImageProcessorPil(
        **{**PROCESSOR_CONFIG, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
    )
    preprocess = Preprocessor(processor)
    pictures = planted_set(512, start=seed * 100_000)
    pixels = torch.from_numpy(np.stack([preprocess(picture.image) for picture in pictures]))
    targets = torch.tensor([int(picture.is_nsfw) for picture in pictures])
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = torch.randint(0, len(pictures), (32,), generator=generator)
        logits = model(pixel_values=pixels[batch]).logits
        # smoothed labels keep the logits finite, so the gradients an explanation reads stay informative
        loss = torch.nn.functional.cross_entropy(logits, targets[batch], label_smoothing=0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0:
            logger.debug("planted model: step %d, loss %.3f", step, loss.item())
    model.eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
