"""What a caller sent to the Space -> something to decode, and nothing else.

Endpoints run with ``preprocess=False`` (so Gradio does not re-encode every upload), which means
Gradio does not check the ``path`` a caller puts in a request either. This module does:

- a file is opened only if it lies, symlinks resolved, inside Gradio's upload folder, where Gradio
  puts what a caller uploaded (under a per-server secret hash, so one caller cannot name another's);
  any other path gets one refusal that says the same thing whether or not the file exists;
- a ``data:`` URL is measured from its encoded length before a byte is decoded;
- an ``http(s)`` URL (as MCP clients send images) is fetched by the caller-supplied ``fetch``,
  which is the SSRF-guarded fetcher.

Every refusal is an InvalidImageError; the Space turns it into a ``gr.Error``.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nsfw_space.errors import InvalidImageError
from nsfw_space.media.budgets import LARGE_GARBAGE_BYTES, note_large_garbage

NOT_RECEIVED = (
    "The request named a file this server did not receive from you. Upload the image itself "
    "(gradio_client: handle_file), or send it as a data: URL or an http(s) URL."
)
NOT_AN_UPLOAD = "The upload did not arrive as an image file. Try uploading it again."


def upload_roots() -> list[str]:
    """The folders Gradio stores received files in, symlinks resolved."""
    from gradio.utils import get_upload_folder

    roots = {os.path.realpath(get_upload_folder())}
    mcp = sys.modules.get("gradio.mcp")  # MCP's data: URLs are saved to the folder it read at import
    if mcp is not None and getattr(mcp, "DEFAULT_TEMP_DIR", None):
        roots.add(os.path.realpath(mcp.DEFAULT_TEMP_DIR))
    return sorted(roots)


def received_file(path: str | os.PathLike) -> str:
    """``path`` if it is a regular file Gradio received (inside its upload folder), else refuse."""
    real = os.path.realpath(os.fspath(path))
    inside = any(os.path.commonpath([real, root]) == root for root in upload_roots())
    if not inside or not os.path.isfile(real):
        raise InvalidImageError(NOT_RECEIVED)
    return real


def check_data_url(url: str, max_bytes: int | float | None) -> str:
    """The base64 body of a ``data:`` URL, refused from its encoded length when it would decode to
    more than ``max_bytes`` (nothing is decoded here)."""
    header, _, data = url.partition(",")
    if ";base64" not in header:
        raise InvalidImageError("Only base64 data: URLs are accepted (data:image/png;base64,...).")
    encoded = len(data) - data.count("\n") - data.count("\r")
    decoded_size = math.floor(encoded * 3 / 4) - data[-2:].count("=")
    if max_bytes is not None and decoded_size > max_bytes:
        raise InvalidImageError(
            f"The image in the data: URL is {decoded_size / 2**20:.1f} MB; the limit is "
            f"{max_bytes / 2**20:.0f} MB. Send a smaller or more compressed image."
        )
    return data


def data_url_bytes(url: str, max_bytes: int | None) -> bytes:
    """The bytes of a base64 ``data:`` URL, refused before decoding when too large."""
    data = check_data_url(url, max_bytes)
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise InvalidImageError("The data: URL is not valid base64.") from None


def payload_source(
    payload: Any, *, max_bytes: int | None = None, fetch: Callable[[str], bytes] | None = None
) -> str | bytes:
    """What Gradio hands over for a file (FileData, its dict, a path string, a data: or http(s)
    URL) -> a received file's path or the image's bytes. Raises InvalidImageError."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump()
    if isinstance(payload, Path):
        payload = str(payload)
    if isinstance(payload, str):
        payload = {"path": payload}
    if not isinstance(payload, dict):
        raise InvalidImageError(NOT_AN_UPLOAD)
    for key in ("path", "url"):
        value = payload.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if value.startswith("data:"):
            # Gradio keeps each request's inputs in its session state (one per API call, kept
            # until thousands of sessions later): drop the encoded image from that same dict, so a
            # 54 MB data: URL does not stay in memory after this request, refused or not.
            payload[key] = None
            if len(value) >= LARGE_GARBAGE_BYTES:
                note_large_garbage()  # its copies in the parsed body go with the next collection
            return data_url_bytes(value, max_bytes)
        if value.lower().startswith(("http://", "https://")):
            if fetch is None:
                raise InvalidImageError("This server does not fetch URLs; upload the image instead.")
            return fetch(value)
        if key == "path":
            return received_file(value)
    raise InvalidImageError(NOT_AN_UPLOAD)


def display_name(payload: Any) -> str:
    """The name a caller gave a file (``orig_name``), else the last part of its path or URL."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump()
    if isinstance(payload, dict):
        name = payload.get("orig_name")
        if isinstance(name, str) and name.strip():
            return name.strip()
        payload = payload.get("path") or payload.get("url") or ""
    text = str(payload)
    if text.startswith("data:"):
        return "data-url"
    return Path(text.split("?", 1)[0]).name or text


FILE_DESCRIPTION = "A file: an upload, a data: URL (data:image/jpeg;base64,...) or a public http(s) URL."


def plain_file_schema(node: Any) -> Any:
    """A JSON schema with Gradio's whole ``FileData`` docstring, wherever it describes a file,
    replaced by one sentence on what to send (for view_api and the MCP tool list)."""
    if isinstance(node, dict):
        described = {key: plain_file_schema(value) for key, value in node.items()}
        for key in ("description", "additional_description"):
            if str(described.get(key) or "").startswith("The FileData class"):
                described[key] = FILE_DESCRIPTION
                if described.get("type") == "string":
                    described.pop("required", None)  # left from the object schema it replaced
        return described
    if isinstance(node, list):
        return [plain_file_schema(value) for value in node]
    return node


def unique_name(name: str, taken: list[tuple[str, Any]]) -> str:
    names = {existing for existing, _ in taken}
    if name not in names:
        return name
    counter = 2
    while f"{name} ({counter})" in names:
        counter += 1
    return f"{name} ({counter})"
