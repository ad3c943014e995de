"""The JavaScript and WASM that run the browser model: transformers.js and onnxruntime-web at pinned
versions, taken from the npm registry's tarballs (each checked against its published sha512), kept
in the cache and served by the Space itself. The browser never loads them from a CDN.

The setting ``web_runtime`` (``NSFW_SPACE_WEB_RUNTIME=DIR``) names a folder that already holds the
files (vendored by hand, for a host with no route to the registry).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmFile:
    """Files taken from one npm package at one version: {path in the tarball: name served}."""

    package: str
    version: str
    integrity: str  # the registry's dist.integrity (sha512, base64)
    files: dict[str, str]

    @property
    def tarball(self) -> str:
        leaf = self.package.rsplit("/", 1)[-1]
        return f"{self.package}/-/{leaf}-{self.version}.tgz"


TRANSFORMERS_JS = NpmFile(
    "@huggingface/transformers",
    "4.3.2",
    "sha512-V3+dqf3iWlRYJ9I9GreM3zGQd0lAXnnoPeddmkOQYWAEE4l/+Fi6p7tx/qVUJlKQgLXGim2W76rTOzz+eC0i7g==",
    {
        "package/dist/transformers.min.js": "transformers.min.js",
        "package/LICENSE": "LICENSE.transformers.txt",
    },
)
# the onnxruntime-web that transformers.js 4.3.2 depends on (package.json), whose WASM its bundle loads
ONNXRUNTIME_WEB = NpmFile(
    "onnxruntime-web",
    "1.31.0-dev.20260914-8d85527a0",
    "sha512-Iy7rtadoBgxS/LLvDr3QW38DB1PNXRnr0GJMcL0TAt7c9qjgVQl83UlGCVyeAnK2InpmW8Uc3PL8XIuqtDeF6g==",
    {
        "package/dist/ort-wasm-simd-threaded.asyncify.mjs": "ort-wasm-simd-threaded.asyncify.mjs",
        "package/dist/ort-wasm-simd-threaded.asyncify.wasm": "ort-wasm-simd-threaded.asyncify.wasm",
    },
)
PACKAGES = (TRANSFORMERS_JS, ONNXRUNTIME_WEB)
FILES = tuple(name for package in PACKAGES for name in package.files.values())


class RuntimeUnavailable(RuntimeError):
    """The browser runtime could not be fetched or checked; the message says why."""


def runtime_tag() -> str:
    return f"transformers.js-{TRANSFORMERS_JS.version}_ort-{ONNXRUNTIME_WEB.version}"


def complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def ensure_runtime(cache_root: Path, vendored: str | Path | None = None, timeout: float = 120.0) -> Path:
    """The folder that holds every runtime file: ``vendored``, or the cache (fetched once)."""
    if vendored:
        folder = Path(vendored)
        if not complete(folder):
            missing = [name for name in FILES if not (folder / name).is_file()]
            raise RuntimeUnavailable(f"the runtime folder {vendored} lacks {', '.join(missing)}")
        return folder
    folder = Path(cache_root) / "web-runtime" / runtime_tag()
    if complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}.", dir=folder.parent))
    try:
        for package in PACKAGES:
            _unpack(package, _download(package, timeout), work)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("browser runtime fetched from the npm registry into %s", folder)
    return folder


def _download(package: NpmFile, timeout: float) -> bytes:
    registry = REGISTRY
    url = f"{registry}/{package.tarball}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as err:
        raise RuntimeUnavailable(
            f"could not fetch {package.package}@{package.version} from {registry}: {err}"
        ) from err
    algorithm, expected = package.integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise RuntimeUnavailable(
            f"{package.package}@{package.version} from {registry} fails its {algorithm} check"
        )
    return data


def _unpack(package: NpmFile, data: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member_name, served in package.files.items():
            member = archive.getmember(member_name)
            source = archive.extractfile(member) if member.isfile() else None
            if source is None:
                raise RuntimeUnavailable(f"{package.package}@{package.version} has no file {member_name}")
            (into / served).write_bytes(source.read())
