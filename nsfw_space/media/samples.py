"""Pictures for calibration, checks, tests and benchmarks: generated ones and the example photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The repository's top-level examples/ folder: nsfw_space/examples links to it in a checkout, and a
# wheel carries it as package data (one copy in the repository either way).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def example_photos() -> list[Path]:
    """The Space's example photographs (safe for work), sorted by name; empty when not shipped."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(path for path in EXAMPLES_DIR.iterdir() if path.suffix.lower() in PHOTO_SUFFIXES)


def varied_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic RGB picture with shapes, gradients and noise that differ by ``seed``."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-1, 1, (3, 2)) * 255
    channels = [base[c] + slope[c, 0] * x / width + slope[c, 1] * y / height for c in range(3)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, rng.uniform(2, 40), (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.uniform(1, max(2, width / 2)), y0 + rng.uniform(1, max(2, height / 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    return image
