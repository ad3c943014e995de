"""What a scan reads, for either engine: files and folders, Parquet tables (an image-bytes or a URL
column) and WebDataset tar shards, each input an :class:`Item` with a stable ``id``.

Items are produced lazily (a Parquet table is read a record batch at a time, a tar shard member by
member), and every read is bounded: no item's bytes are read past ``max_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nsfw_space.config import Settings
from nsfw_space.errors import ConfigError, InvalidImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ico", ".jfif"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
INPUT_FORMATS = ("files", "parquet", "webdataset")


@dataclass(frozen=True)
class Item:
    """One input of a scan: ``id`` (unique within the scan), the file it came from, and how to get
    its bytes (a file's bytes, a table cell, a tar member or a URL's body)."""

    id: str
    path: str
    read: Callable[[], bytes]
    url: str | None = None  # for a URL cell: fetched where the item is read (a Ray task, say)


@dataclass(frozen=True)
class Loaded:
    """An item's bytes and their sha256, or why it could not be read."""

    item: Item
    data: bytes | InvalidImageError
    sha256: str | None


def load(item: Item) -> Loaded:
    """Read ``item``; an unreadable item becomes an error, never an exception."""
    try:
        data = item.read()
    except InvalidImageError as err:
        return Loaded(item, err, None)
    except OSError as err:
        return Loaded(item, InvalidImageError(f"could not be read ({err.strerror or err})"), None)
    return Loaded(item, data, hashlib.sha256(data).hexdigest())


def walk(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, and images/videos found recursively in folders, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                        yield Path(root) / name
        else:
            yield path


def read_file(path: str, max_bytes: int | None) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(-1 if max_bytes is None else max_bytes + 1)
    return _within(data, max_bytes)


def _within(data: bytes, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidImageError(f"is larger than the {max_bytes // (1024 * 1024)} MB limit")
    return data


def file_items(paths: Iterable[str | Path], max_bytes: int | None) -> Iterator[Item]:
    for path in walk(paths):
        name = str(path)
        yield Item(name, name, lambda name=name: read_file(name, max_bytes))


def parquet_items(
    paths: Iterable[str | Path],
    *,
    image_column: str | None,
    url_column: str | None,
    id_column: str | None,
    max_bytes: int | None,
    fetch: Callable[[str], bytes] | None,
) -> Iterator[Item]:
    """One item per row of each Parquet file (folders: every ``*.parquet`` inside, sorted). The
    image is the ``image_column`` cell (bytes, or a struct with ``bytes`` as Hugging Face
    datasets store images) or the body of the ``url_column`` URL; the id is the ``id_column``
    cell, else ``FILE#ROW``."""
    import pyarrow.parquet as pq

    if bool(image_column) == bool(url_column):
        raise ConfigError("Give one of --image-column and --url-column for Parquet input.")
    if url_column and fetch is None:
        raise ConfigError("URLs are not fetched here (NSFW_SPACE_ALLOW_URLS is off).")
    column = image_column or url_column
    for path in _expand(paths, ".parquet"):
        table = pq.ParquetFile(path)
        names = set(table.schema_arrow.names)
        for wanted in filter(None, (column, id_column)):
            if wanted not in names:
                raise ConfigError(f"{path} has no column {wanted!r} (it has {', '.join(sorted(names))}).")
        row = 0
        for batch in table.iter_batches(batch_size=256, columns=[c for c in (column, id_column) if c]):
            cells = batch.column(column).to_pylist()
            ids = batch.column(id_column).to_pylist() if id_column else [None] * len(cells)
            for cell, cell_id in zip(cells, ids, strict=True):
                identity = str(cell_id) if cell_id is not None else f"{path}#{row}"
                reader = _cell_reader(cell, bool(url_column), max_bytes, fetch)
                yield Item(identity, str(path), reader, url=str(cell) if url_column and cell else None)
                row += 1


def _cell_reader(
    cell: object, is_url: bool, max_bytes: int | None, fetch: Callable[[str], bytes] | None
) -> Callable[[], bytes]:
    def read() -> bytes:
        if is_url:
            if not isinstance(cell, str) or not cell.strip():
                raise InvalidImageError("has no URL in its row")
            return _within(fetch(cell.strip()), max_bytes)  # type: ignore[misc]
        value = cell.get("bytes") if isinstance(cell, dict) else cell
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise InvalidImageError("has no image bytes in its row")
        return _within(bytes(value), max_bytes)

    return read


def webdataset_items(paths: Iterable[str | Path], max_bytes: int | None) -> Iterator[Item]:
    """One item per image member of each WebDataset tar shard (``KEY.jpg`` and friends; folders:
    every ``*.tar`` inside, sorted); the id is ``SHARD/KEY``. Members are read in order from
    the stream, never extracted to disk."""
    for path in _expand(paths, ".tar"):
        try:
            archive = tarfile.open(path, mode="r|*")  # noqa: SIM115 - closed by the with below
        except (tarfile.TarError, OSError) as err:
            raise ConfigError(f"{path} is not a tar shard ({err}).") from err
        with archive:
            for member in archive:
                suffix = PurePosixPath(member.name).suffix.lower()
                if not member.isfile() or suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                    continue
                key = member.name[: -len(suffix)]
                identity = f"{Path(path).name}/{key}"
                if max_bytes is not None and member.size > max_bytes:
                    error = InvalidImageError(f"is larger than the {max_bytes // (1024 * 1024)} MB limit")
                    yield Item(identity, str(path), _raiser(error))
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                yield Item(identity, str(path), lambda data=data: data)


def _raiser(error: InvalidImageError) -> Callable[[], bytes]:
    def read() -> bytes:
        raise error

    return read


def _expand(paths: Iterable[str | Path], suffix: str) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
        else:
            found.append(path)
    return found


def items_from(
    paths: Iterable[str | Path],
    input_format: str = "files",
    *,
    image_column: str | None = None,
    url_column: str | None = None,
    id_column: str | None = None,
    max_bytes: int | None = None,
    fetch: Callable[[str], bytes] | None = None,
) -> Iterator[Item]:
    """The items of a scan's inputs in a stable order. Raises ConfigError for unusable inputs."""
    if input_format == "files":
        return file_items(paths, max_bytes)
    if input_format == "parquet":
        return parquet_items(
            paths,
            image_column=image_column,
            url_column=url_column,
            id_column=id_column,
            max_bytes=max_bytes,
            fetch=fetch,
        )
    if input_format == "webdataset":
        return webdataset_items(paths, max_bytes)
    raise ConfigError(f"Unknown input format {input_format!r}; use {', '.join(INPUT_FORMATS)}.")


def url_fetcher(settings: Settings) -> Callable[[str], bytes] | None:
    """URL cells are fetched as the Space fetches URLs: public addresses only (unless the test
    switch allows private ones), size and time limits; None when URLs are off."""
    if not settings.allow_urls:
        return None
    from nsfw_space.media.fetch import fetch_image_bytes

    def fetch(url: str) -> bytes:
        return fetch_image_bytes(
            url,
            max_bytes=settings.max_file_bytes,
            timeout=settings.url_timeout,
            allow_private=settings.allow_private_urls,
        )

    return fetch


def read_batch(batch: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Read and hash a batch of item descriptors (``id``, ``path``, ``kind``: file, url, bytes or
    error, ``locator``, ``blob``): the Ray engine's reading stage. Bytes out, or why not."""
    config = Settings(**settings)
    fetch = url_fetcher(config)
    out: dict[str, list] = {"id": [], "path": [], "data": [], "sha256": [], "error": []}
    for identity, path, kind, locator, blob in zip(
        batch["id"], batch["path"], batch["kind"], batch["locator"], batch["blob"], strict=True
    ):
        if kind == "file":
            read = lambda locator=locator: read_file(locator, config.max_file_bytes)  # noqa: E731
        elif kind == "url":
            read = lambda locator=locator: _fetch(fetch, locator)  # noqa: E731
        elif kind == "error":
            read = _raiser(InvalidImageError(locator))
        else:
            read = lambda blob=blob: bytes(blob)  # noqa: E731
        entry = load(Item(str(identity), str(path), read))
        failed = isinstance(entry.data, InvalidImageError)
        out["id"].append(entry.item.id)
        out["path"].append(entry.item.path)
        out["data"].append(b"" if failed else entry.data)
        out["sha256"].append(entry.sha256 or "")
        out["error"].append(str(entry.data) if failed else "")
    return out


def _fetch(fetch: Any, url: str) -> bytes:
    if fetch is None:
        raise InvalidImageError("URLs are not fetched here (NSFW_SPACE_ALLOW_URLS is off)")
    return fetch(url)
