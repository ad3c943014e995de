"""The sentences a refused file gets: what is wrong with it and what to do, never a traceback."""

from __future__ import annotations

SUPPORTED_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF or ICO"


def damaged_message(err: BaseException) -> str:
    return (
        f"The image file is damaged and cannot be decoded ({short_reason(err)}). "
        "Re-save or re-export it and try again."
    )


def short_reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def not_an_image_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        kind = "a PDF document"
    elif b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in data[:2048].lower()):
        kind = "an SVG drawing (vector graphics are not supported; export it as PNG)"
    elif head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        kind = "an HTML page"
    elif looks_like_text(data[:512]):
        kind = "a text file"
    else:
        kind = "not an image format we can read"
        return f"This file is {kind}. Use a {SUPPORTED_FORMATS} image."
    return f"This file is {kind}, not an image. Use a {SUPPORTED_FORMATS} image."


def looks_like_text(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in chunk
