"""A batch request's files and URL lines -> named sources (or each entry's own error), counted
and checked before anything is fetched; the URLs then share one download budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from nsfw_space.config import Settings
from nsfw_space.errors import InvalidImageError
from nsfw_space.space.arguments import optional_text
from nsfw_space.space.payloads import display_name, unique_name

Named = list[tuple[str, str | bytes | InvalidImageError]]


def batch_sources(
    files: Any,
    urls: str | None,
    settings: Settings,
    open_upload: Callable[[Any], str | bytes],
    fetch: Callable[[str, int], bytes],
) -> Named:
    """Name and open every file and URL of a batch. A bad entry becomes its own error row; a
    batch that is not a list, empty or too large is one ``gr.Error``."""
    if files is not None and not isinstance(files, (list, tuple)):
        raise gr.Error("files must be a list of files.", print_exception=False)
    lines = [line.strip() for line in (optional_text(urls, "urls") or "").splitlines() if line.strip()]
    total = len(files or []) + len(lines)
    if not total:
        raise gr.Error("No files were given. Add images (or URLs) and try again.", print_exception=False)
    if total > settings.max_batch_files:
        raise gr.Error(
            f"{total} files were given; at most {settings.max_batch_files} are checked at once. "
            "Split them into smaller batches, or use `nsfw-space scan` for folders.",
            print_exception=False,
        )
    named: Named = []
    for item in files or []:
        named.append((unique_name(display_name(item), named), opened(open_upload, item)))
    download_left = settings.max_batch_download_bytes
    for line in lines:
        if download_left <= 0:
            source: str | bytes | InvalidImageError = InvalidImageError(
                f"This batch has already downloaded {settings.max_batch_download} from its URLs, "
                "its limit; check the remaining URLs in another batch."
            )
        else:
            source = opened(fetch, line, download_left)
        if isinstance(source, bytes):
            download_left -= len(source)
        named.append((unique_name(line, named), source))
    return named


def opened(open_one: Callable[..., str | bytes], *args: Any) -> str | bytes | InvalidImageError:
    try:
        return open_one(*args)
    except InvalidImageError as err:
        return err
