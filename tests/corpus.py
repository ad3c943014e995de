"""A corpus of odd and hostile files, generated in code (no binary blobs in the repository)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from nsfw_space.tools.synthetic import jpeg_bytes, varied_image


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture(size=(160, 120)) -> Image.Image:
    return varied_image(11, size)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb: tiny file, huge image)."""
    raw = zlib.compress(b"\x00" * 64)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _gif_bomb() -> bytes:
    data = bytearray(_save(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", 65000, 65000)  # logical screen 65000 x 65000
    data[data.index(b",") + 5 : data.index(b",") + 9] = struct.pack("<HH", 65000, 65000)
    return bytes(data)


def _animated(fmt: str) -> bytes:
    frames = [varied_image(seed, (96, 72)) for seed in range(5)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)


def _mode(mode: str) -> bytes:
    picture = _picture()
    if mode == "I;16":
        return _save(Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257), "PNG")
    if mode == "F":
        return _save(Image.fromarray(np.asarray(picture.convert("L")).astype(np.float32) / 255.0), "TIFF")
    if mode == "P-transparent":
        palette = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        palette.info["transparency"] = 3
        return _save(palette, "PNG")
    if mode == "CMYK":
        return _save(picture.convert("CMYK"), "JPEG")
    return _save(picture.convert(mode), "PNG")


def readable_files() -> dict[str, bytes]:
    """Files that must be classified (name -> bytes); the name's extension is what a user would upload."""
    picture = _picture()
    files = {f"mode-{m.replace(';', '')}.png": _mode(m) for m in ("RGB", "RGBA", "LA", "L", "1", "I;16")}
    files["mode-P-transparent.png"] = _mode("P-transparent")
    files["mode-F.tif"] = _mode("F")
    files["mode-CMYK.jpg"] = _mode("CMYK")
    files.update(
        {
            "photo.jpg": jpeg_bytes(picture),
            "photo.webp": _save(picture, "WEBP"),
            "photo.gif": _save(picture.convert("P"), "GIF"),
            "photo.bmp": _save(picture, "BMP"),
            "photo.tiff": _save(picture, "TIFF"),
            "icon.ico": _save(picture.resize((64, 64)), "ICO"),
            "animated.gif": _animated("GIF"),
            "animated.webp": _animated("WEBP"),
            "one-pixel.png": _save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
            "very-wide.png": _save(varied_image(3, (4000, 3)), "PNG"),
            "very-tall.png": _save(varied_image(4, (2, 3000)), "PNG"),
            "progressive-cut.jpg": _save(picture.resize((640, 480)), "JPEG", progressive=True)[:-2500],
            "no-end-marker.jpg": jpeg_bytes(picture)[:-2],
        }
    )
    return files


def refused_files() -> dict[str, tuple[bytes, str]]:
    """Files that must be refused: name -> (bytes, a phrase the refusal must contain)."""
    photo = jpeg_bytes(_picture((640, 480)))
    png = _save(_picture(), "PNG")
    return {
        "empty.jpg": (b"", "empty"),
        "notes.jpg": (b"Dear diary, today I uploaded a text file.\n" * 5, "text file"),
        "page.jpg": (b"<!DOCTYPE html><html><body><img src=x></body></html>", "HTML page"),
        "drawing.jpg": (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
            "SVG",
        ),
        "report.jpg": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", "PDF"),
        "random.jpg": (
            np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "not an image",
        ),
        "header-only.jpg": (photo[:400], "truncated"),
        "png-header-only.png": (png[:60], "truncated"),
        "bomb.png": (_png_with_size(100_000, 100_000), "megapixels"),
        "bomb.gif": (_gif_bomb(), "megapixels"),
        "huge-header.png": (_png_with_size(5_000, 4_000), "megapixels"),
    }
