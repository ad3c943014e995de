"""The on-device page as the Space serves it under ``/private/``, and as ``export-web`` writes it.

Only a fixed set of files is served: the page, its script and style, ``status.json``, the runtime's
files and the browser model's three files, each with its MIME type. Every answer carries the
cross-origin isolation headers, so WASM runs multi-threaded where the page is opened on its own
(inside the Gradio page's frame it is isolated only where the host sends them for the whole Space).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from nsfw_space.web import export, runtime
from nsfw_space.web.building import BrowserModel

PAGE_DIR = Path(__file__).resolve().parent / "page"
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "private.js": "text/javascript",
    "private.css": "text/css",
}
MODEL_FILES = ("config.json", "preprocessor_config.json", export.MODEL_FILE)
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
MIME = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".txt": "text/plain",
}


def page_status(browser: BrowserModel, policy: dict[str, float], labels: dict[str, Any]) -> dict[str, Any]:
    """What ``status.json`` says: the model's state and sizes, the Space's thresholds, its labels."""
    return {**browser.status(), **policy, **labels}


def private_app(status: Callable[[], dict[str, Any]], browser: BrowserModel) -> Starlette:
    """The ``/private`` app: ``status`` gives status.json, ``browser`` the files once ready."""

    async def page(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        if name not in PAGE_FILES:
            return _missing()
        return FileResponse(PAGE_DIR / name, media_type=PAGE_FILES[name], headers=_headers(cache=False))

    async def status_json(request: Request) -> Response:
        return JSONResponse(status(), headers=_headers(cache=False))

    async def runtime_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in runtime.FILES or not browser.ready or browser.runtime_folder is None:
            return _missing()
        return _file(browser.runtime_folder / name)

    async def model_file(request: Request) -> Response:
        key, name = request.path_params["key"], request.path_params["name"]
        if not browser.ready or key != browser.key or name not in MODEL_FILES or browser.model_folder is None:
            return _missing()
        return _file(browser.model_folder / name)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/status.json", status_json),
            Route("/runtime/{name}", runtime_file),
            Route("/model/{key}/{name:path}", model_file),
            Route("/{name}", page),
        ]
    )


def _headers(cache: bool) -> dict[str, str]:
    return {**ISOLATION, "Cache-Control": "public, max-age=3600" if cache else "no-cache"}


def _file(path: Path) -> Response:
    media = MIME.get(
        path.suffix, "application/json" if path.suffix == ".json" else "application/octet-stream"
    )
    return FileResponse(path, media_type=media, headers=_headers(cache=True))


def _missing() -> Response:
    return JSONResponse({"error": "not here"}, status_code=404, headers=_headers(cache=False))


def export_site(browser: BrowserModel, status: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the page, ``status.json``, the runtime and the model as static files in ``out_dir``
    (the same paths as under ``/private/``): any static host can serve them."""
    if not browser.ready or browser.model_folder is None or browser.runtime_folder is None:
        raise export.BrowserModelRefused(browser.reason or "the browser model is not ready")
    out_dir = Path(out_dir)
    written = []
    for target, source in [
        *((out_dir / name, PAGE_DIR / name) for name in PAGE_FILES),
        *((out_dir / "runtime" / name, browser.runtime_folder / name) for name in runtime.FILES),
        *((out_dir / "model" / str(browser.key) / name, browser.model_folder / name) for name in MODEL_FILES),
    ]:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    (out_dir / "status.json").write_text(json.dumps(status, indent=1))
    written.append(out_dir / "status.json")
    return written
