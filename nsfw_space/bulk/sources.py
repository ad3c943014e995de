"""What a scan reads, for either engine: files and folders, Parquet tables (an image-bytes or a URL
column) and WebDataset tar shards, on this machine or in object storage (``s3://``, ``gs://``,
``abfs://``: any URI pyarrow's filesystems open), each input an :class:`Item` with a stable ``id``.

Inputs are split into **units** before anything is read: a run of files, one row group of a Parquet
file (found from its footer alone), one tar shard. The local engine reads the units in order; the
Ray engine reads them in parallel tasks, so no machine holds more than a unit's bytes at once and
the driver never reads an image. Every read is bounded: no item's bytes are read past ``max_bytes``.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from nsfw_space.bulk.locations import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    _open_random,
    exists,
    is_uri,
    listing,
    open_stream,
)
from nsfw_space.config import Settings
from nsfw_space.errors import ConfigError, InvalidImageError

INPUT_FORMATS = ("files", "parquet", "webdataset")
FORMAT_SUFFIXES = {".parquet": "parquet", ".tar": "webdataset"}  # anything else is an image file
PARQUET_FLAGS = ("image_column", "url_column", "id_column")
FILES_PER_UNIT = 64


@dataclass(frozen=True)
class Inputs:
    """What a scan reads: local paths or object-storage URIs, in one of :data:`INPUT_FORMATS`;
    for Parquet, the column holding image bytes or URLs and, optionally, the id column."""

    paths: tuple[str, ...]
    format: str = "auto"
    image_column: str | None = None
    url_column: str | None = None
    id_column: str | None = None

    def resolved(self) -> Inputs:
        """These inputs with ``auto`` replaced by the format the paths have: ``.parquet`` files (or
        folders of them) are tables, ``.tar`` files WebDataset shards, anything else image files.
        Raises ConfigError for a mix of kinds, or for Parquet flags given to other inputs."""
        fmt = self.format
        if fmt == "auto":
            missing = [path for path in self.paths if not exists(path)]
            if missing:
                raise ConfigError(f"No such file or folder: {missing[0]}.")
            kinds = {path: _kind(path) for path in self.paths}
            found = set(kinds.values()) - {"empty"}
            if len(found) > 1 or "mixed" in found:
                described = ", ".join(
                    f"{path} ({_DESCRIBED[kind]})" for path, kind in kinds.items() if kind != "empty"
                )
                raise ConfigError(
                    f"These inputs are of different kinds: {described}; scan each kind in a command "
                    "of its own, or name one with --input-format."
                )
            fmt = found.pop() if found else "files"
        given = [name for name in PARQUET_FLAGS if getattr(self, name)]
        if given and fmt != "parquet":
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to Parquet tables; these inputs are {_DESCRIBED[fmt]}.")
        return replace(self, format=fmt)

    def check(self, url_fetching: bool) -> None:
        """Raise ConfigError for an unknown format, unusable columns or an input that does not exist."""
        if self.format not in INPUT_FORMATS:
            raise ConfigError(f"Unknown input format {self.format!r}; use auto, {', '.join(INPUT_FORMATS)}.")
        if self.format == "parquet":
            if bool(self.image_column) == bool(self.url_column):
                raise ConfigError("Give one of --image-column and --url-column for Parquet input.")
            if self.url_column and not url_fetching:
                raise ConfigError("URLs are not fetched here (NSFW_SPACE_ALLOW_URLS is off).")
        missing = [path for path in self.paths if not exists(path)]
        if missing:
            raise ConfigError(f"No such file or folder: {missing[0]}.")

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.image_column or self.url_column, self.id_column) if c]


_DESCRIBED = {
    "files": "image files",
    "webdataset": "WebDataset shards",
    "parquet": "Parquet tables",
    "mixed": "a folder of several kinds",
}


def _kind(path: str) -> str:
    """``parquet``, ``webdataset`` or ``files`` for one input (a folder by what it holds: tables,
    shards or images; ``mixed`` when it holds more than one kind, ``empty`` when none)."""
    suffix = PurePosixPath(path.split("?", 1)[0]).suffix.lower()
    if suffix in FORMAT_SUFFIXES:
        return FORMAT_SUFFIXES[suffix]
    if not (is_uri(path) or Path(path).is_dir()):
        return "files"
    wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES | set(FORMAT_SUFFIXES)
    kinds = {
        FORMAT_SUFFIXES.get(PurePosixPath(name).suffix.lower(), "files") for name in listing([path], wanted)
    }
    if len(kinds) > 1:
        return "mixed"
    return kinds.pop() if kinds else "empty"


@dataclass(frozen=True)
class Item:
    """One input of a scan: ``id`` (unique within the scan), the file it came from, and how to get
    its bytes (a file's bytes, a table cell, a tar member or a URL's body)."""

    id: str
    path: str
    read: Callable[[], bytes]
    url: str | None = None  # for a URL cell: fetched where the item is read


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


# --- where inputs live: this machine, or object storage through pyarrow's filesystems ---------------
def read_file(path: str, max_bytes: int | None) -> bytes:
    with open_stream(path) as handle:  # pyarrow's streams take no -1: read() reads to the end
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    return _within(data, max_bytes)


def _within(data: bytes, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidImageError(f"is larger than the {max_bytes // (1024 * 1024)} MB limit")
    return data


# --- units: what one reading task reads ------------------------------------------------------------
def units_of(inputs: Inputs, files: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The units of ``inputs``, in order (``files``: the listed files, when the caller has them).
    A unit is a plain dict (``format``, ``path``, ``files``, ``group``, ``first_row``) so it can
    travel to a Ray task. Parquet files are checked here, from their footers."""
    if inputs.format == "files":
        names = files if files is not None else list(listing(inputs.paths, IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        for start in range(0, len(names), FILES_PER_UNIT):
            yield _unit("files", files=names[start : start + FILES_PER_UNIT])
    elif inputs.format == "parquet":
        for path in listing(inputs.paths, {".parquet"}):
            yield from _row_groups(path, inputs)
    else:
        for path in listing(inputs.paths, {".tar"}):
            yield _unit("webdataset", path=path)


def _unit(fmt: str, path: str = "", files: list[str] | None = None, group: int = -1, first: int = 0) -> dict:
    return {"format": fmt, "path": path, "files": files or [], "group": group, "first_row": first}


def _row_groups(path: str, inputs: Inputs) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        with _open_random(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except (OSError, ValueError) as err:  # not a Parquet file: pyarrow's ArrowInvalid is a ValueError
        raise ConfigError(f"{path} is not a Parquet table ({err}).") from err
    names = set(metadata.schema.to_arrow_schema().names)
    for wanted in inputs.columns:
        if wanted not in names:
            raise ConfigError(f"{path} has no column {wanted!r} (it has {', '.join(sorted(names))}).")
    first = 0
    for group in range(metadata.num_row_groups):
        yield _unit("parquet", path=path, group=group, first=first)
        first += metadata.row_group(group).num_rows


def read_unit(
    unit: dict[str, Any], inputs: Inputs, max_bytes: int | None, fetch: Callable[[str], bytes] | None
) -> Iterator[Item]:
    """The items of one unit, in order, read lazily (a Parquet row group a record batch at a time,
    a tar shard member by member)."""
    if unit["format"] == "files":
        for name in unit["files"]:
            yield Item(name, name, lambda name=name: read_file(name, max_bytes))
    elif unit["format"] == "parquet":
        yield from _parquet_rows(unit, inputs, max_bytes, fetch)
    else:
        yield from _shard_members(unit["path"], max_bytes)


def _parquet_rows(
    unit: dict[str, Any], inputs: Inputs, max_bytes: int | None, fetch: Callable[[str], bytes] | None
) -> Iterator[Item]:
    """One item per row: the image is the image cell (bytes, or a struct with ``bytes`` as Hugging
    Face datasets store images) or the body of the URL cell; the id is the id cell, else ``FILE#ROW``."""
    import pyarrow.parquet as pq

    path, column = unit["path"], inputs.image_column or inputs.url_column
    row = int(unit["first_row"])
    with _open_random(path) as handle:
        table = pq.ParquetFile(handle)
        for batch in table.iter_batches(
            batch_size=256, row_groups=[int(unit["group"])], columns=inputs.columns
        ):
            cells = batch.column(column).to_pylist()
            ids = batch.column(inputs.id_column).to_pylist() if inputs.id_column else [None] * len(cells)
            for cell, cell_id in zip(cells, ids, strict=True):
                identity = str(cell_id) if cell_id is not None else f"{path}#{row}"
                reader = _cell_reader(cell, bool(inputs.url_column), max_bytes, fetch)
                yield Item(identity, path, reader, url=str(cell) if inputs.url_column and cell else None)
                row += 1


def _cell_reader(
    cell: object, is_url: bool, max_bytes: int | None, fetch: Callable[[str], bytes] | None
) -> Callable[[], bytes]:
    def read() -> bytes:
        if is_url:
            if not isinstance(cell, str) or not cell.strip():
                raise InvalidImageError("has no URL in its row")
            if fetch is None:
                raise InvalidImageError("URLs are not fetched here (NSFW_SPACE_ALLOW_URLS is off)")
            return _within(fetch(cell.strip()), max_bytes)
        value = cell.get("bytes") if isinstance(cell, dict) else cell
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise InvalidImageError("has no image bytes in its row")
        return _within(bytes(value), max_bytes)

    return read


def _shard_members(path: str, max_bytes: int | None) -> Iterator[Item]:
    """One item per image member of a WebDataset tar shard (``KEY.jpg`` and friends), id
    ``SHARD/KEY``; members are read in order from the stream, never extracted to disk."""
    try:
        stream = open_stream(path)
        archive = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as err:
        raise ConfigError(f"{path} is not a tar shard ({err}).") from err
    with stream, archive:
        for member in archive:
            suffix = PurePosixPath(member.name).suffix.lower()
            if not member.isfile() or suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                continue
            identity = f"{PurePosixPath(path.split('?', 1)[0]).name}/{member.name[: -len(suffix)]}"
            if max_bytes is not None and member.size > max_bytes:
                error = InvalidImageError(f"is larger than the {max_bytes // (1024 * 1024)} MB limit")
                yield Item(identity, path, _raiser(error))
                continue
            handle = archive.extractfile(member)
            data = handle.read() if handle is not None else b""
            yield Item(identity, path, lambda data=data: data)


def _raiser(error: InvalidImageError) -> Callable[[], bytes]:
    def read() -> bytes:
        raise error

    return read


def items_from(
    inputs: Inputs,
    units: Iterable[dict[str, Any]],
    *,
    max_bytes: int | None = None,
    fetch: Callable[[str], bytes] | None = None,
) -> Iterator[Item]:
    """The items of ``units`` (of ``inputs``), in order: what the local engine reads."""
    for unit in units:
        yield from read_unit(unit, inputs, max_bytes, fetch)


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


def read_units(
    batch: dict[str, Any],
    settings: dict[str, Any],
    inputs: dict[str, Any],
    skip: frozenset[str],
) -> Iterator[dict[str, list]]:
    """The Ray engine's reading stage: for each unit of ``batch``, its items read and hashed, a
    batch of rows (``id``, ``path``, ``data``, ``sha256``, ``error``, ``skipped``) per 64 items.
    An id in ``skip`` (already written) is passed on unread, marked skipped."""
    config = Settings(**settings)
    spec = Inputs(**{**inputs, "paths": tuple(inputs["paths"])})
    fetch = url_fetcher(config)
    for index in range(len(batch["format"])):
        unit = {key: batch[key][index] for key in ("format", "path", "files", "group", "first_row")}
        unit["files"] = [str(name) for name in unit["files"]]
        out = _empty()
        for item in read_unit(unit, spec, config.max_file_bytes, fetch):
            entry = Loaded(item, b"", None) if item.id in skip else load(item)
            failed = isinstance(entry.data, InvalidImageError)
            out["id"].append(item.id)
            out["path"].append(item.path)
            out["data"].append(b"" if failed else entry.data)
            out["sha256"].append(entry.sha256 or "")
            out["error"].append(str(entry.data) if failed else "")
            out["skipped"].append(item.id in skip)
            if len(out["id"]) >= 64:
                yield out
                out = _empty()
        if out["id"]:
            yield out


def _empty() -> dict[str, list]:
    return {"id": [], "path": [], "data": [], "sha256": [], "error": [], "skipped": []}
