"""Where a scan's bytes live: local files and folders, or object storage (``s3://``, ``gs://``,
``abfs://``: any URI pyarrow's filesystems open). Listing, existence and opening, nothing read."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from nsfw_space.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ico", ".jfif"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def _remote(uri: str) -> tuple[Any, str, str]:
    """(filesystem, path inside it, scheme) for an object-storage URI."""
    import pyarrow.fs as pafs

    try:
        filesystem, inner = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise ConfigError(f"Cannot open {uri}: {err}") from err
    return filesystem, inner, uri.split("://", 1)[0]


def exists(path: str) -> bool:
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs as pafs

    filesystem, inner, _ = _remote(path)
    try:
        return filesystem.get_file_info(inner).type != pafs.FileType.NotFound
    except OSError as err:
        raise ConfigError(f"Cannot reach {path}: {err}") from err


def open_stream(path: str) -> IO[bytes]:
    """A readable binary stream of a local file or an object."""
    if not is_uri(path):
        return open(path, "rb")
    filesystem, inner, _ = _remote(path)
    return filesystem.open_input_stream(inner)


def _open_random(path: str) -> Any:
    if not is_uri(path):
        return open(path, "rb")
    filesystem, inner, _ = _remote(path)
    return filesystem.open_input_file(inner)


def listing(paths: Iterable[str | Path], suffixes: set[str]) -> Iterator[str]:
    """Files named directly, and files with one of ``suffixes`` found recursively in folders (or
    under URI prefixes), in a stable order."""
    for raw in paths:
        if is_uri(raw):
            yield from _remote_listing(str(raw), suffixes)
            continue
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in suffixes:
                        yield str(Path(root) / name)
        else:
            yield str(path)


def _remote_listing(uri: str, suffixes: set[str]) -> Iterator[str]:
    import pyarrow.fs as pafs

    filesystem, inner, scheme = _remote(uri)
    try:
        if filesystem.get_file_info(inner).type == pafs.FileType.File:
            yield uri
            return
        found = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
    except OSError as err:
        raise ConfigError(f"Cannot list {uri}: {err}") from err
    query = f"?{uri.split('?', 1)[1]}" if "?" in uri else ""  # options such as ?endpoint_override=
    names = sorted(f.path for f in found if f.type == pafs.FileType.File)
    for name in names:
        if PurePosixPath(name).suffix.lower() in suffixes:
            yield f"{scheme}://{name}{query}"


def walk(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, and images/videos found recursively in folders, in a stable order."""
    return (Path(name) for name in listing(paths, IMAGE_SUFFIXES | VIDEO_SUFFIXES))
