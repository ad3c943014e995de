"""Private mode: the On this device tab runs the model in the visitor's browser (transformers.js,
WASM, in Debian's Chromium), and the image never leaves the page.

The browser model is built from the tiny test model by the real path (a child process exports and
quantises it, the runtime comes from the npm registry at its pinned versions) once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from nsfw_space import Settings
from nsfw_space.media.samples import example_photos
from nsfw_space.tools.synthetic import varied_image
from nsfw_space.web import export, serve
from nsfw_space.web.building import BrowserModel
from tests.helpers import free_port
from tests.test_browser import BROWSER_ARGS, CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.02  # the bound between the browser's scores and /classify


@pytest.fixture(scope="module")
def web_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web-cache")


@pytest.fixture(scope="module")
def private_space(classifier, gradio_tmp, web_cache):
    """The Space with its On this device tab, from an empty cache: yields (url, browser model,
    the states status.json showed right after launch)."""
    from nsfw_space.space.demo import create_demo, launch_options

    settings = Settings(private_mode=True, max_file_size="2MB")
    browser_model = BrowserModel(classifier, cache_dir=web_cache)
    demo = create_demo(classifier, settings, browser=browser_model)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_options(settings, demo)
    )
    first = httpx.get(f"{url}private/status.json").json()["state"]
    try:
        assert browser_model.wait(300), browser_model.reason
        yield url, browser_model, first
    finally:
        demo.close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is missing: .ci/run installs it with apt-get"
    with sync_playwright() as instance:
        browser = instance.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def test_pictures(tmp_path_factory) -> list[Path]:
    """The example photographs and generated pictures: a large JPEG, a PNG with transparency."""
    folder = tmp_path_factory.mktemp("private-pictures")
    big = folder / "generated-big.jpg"
    varied_image(501, (300, 200)).resize((1800, 1200)).save(big, quality=90)
    small = folder / "generated-small.jpg"
    varied_image(502, (160, 240)).save(small, quality=92)
    transparent = folder / "generated-alpha.png"
    picture = varied_image(503, (256, 256)).convert("RGBA")
    picture.putalpha(Image.linear_gradient("L").resize((256, 256)))
    picture.save(transparent)
    return [*example_photos(), big, small, transparent]


def open_private_tab(chromium, url):
    page = chromium.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url)
    page.get_by_role("tab", name="On this device").click()
    frame = page.frame_locator("#private-frame")
    frame.locator("body[data-state=ready]").wait_for(timeout=120_000)
    return page, frame


def check_on_device(frame, path: Path) -> dict:
    frame.locator("#private-input").set_input_files(str(path))
    frame.locator("#private-result[data-state=done], #private-result[data-state=error]").wait_for(
        timeout=60_000
    )
    scores = frame.locator("#private-result").get_attribute("data-scores")
    return json.loads(scores) if scores else {}


def test_the_browser_model_is_built_aside_while_the_space_serves(private_space, web_cache):
    url, browser_model, first = private_space
    assert first in ("starting", "building"), first  # the Space answered before the build was done
    status = httpx.get(f"{url}private/status.json").json()
    assert status["state"] == "ready"
    assert status["worst_difference"] <= export.TOLERANCE
    assert status["model_bytes"] == (browser_model.model_folder / export.MODEL_FILE).stat().st_size
    assert status["nsfw_labels"] == ["nsfw"] and status["threshold"] == 0.5
    assert not [p for p in (web_cache / "web").iterdir() if p.name.startswith(".")]  # no work folder left
    again = BrowserModel(browser_model.classifier, cache_dir=web_cache)
    started = time.monotonic()
    again.start(build="now")
    assert again.ready and again.key == browser_model.key
    assert time.monotonic() - started < 10  # found in the cache: no second build


def test_on_device_scores_match_the_server_and_no_request_carries_the_image(
    private_space, chromium, test_pictures
):
    url, _, _ = private_space
    client = Client(url, verbose=False)
    page, frame = open_private_tab(chromium, url)
    requests = []
    page.on("request", lambda request: requests.append(request))
    try:
        for path in test_pictures:
            on_device = check_on_device(frame, path)
            server = client.predict(handle_file(str(path)), api_name="/classify")
            expected = {item["label"]: item["confidence"] for item in server["confidences"]}
            assert set(on_device) == set(expected), path.name
            worst = max(abs(on_device[label] - expected[label]) for label in expected)
            assert worst <= TOLERANCE, (path.name, on_device, expected)
            assert max(on_device, key=on_device.get) == server["label"], (path.name, on_device, expected)
        backend = frame.locator("#private-backend").inner_text()
        assert "WASM" in backend and "thread" in backend
        assert "stays on this device" in frame.locator("#private-promise").inner_text()
    finally:
        page.close()
    heads = [path.read_bytes()[:256] for path in test_pictures]
    origin = url.rstrip("/")
    for request in requests:  # every request the page made while it checked the pictures
        assert request.url.startswith((origin, "blob:", "data:")), request.url
        assert "upload" not in request.url, request.url
        body = request.post_data_buffer or b""
        assert len(body) < 512, (request.url, len(body))
        assert not any(head[16:80] in body for head in heads)


def test_a_file_that_is_not_an_image_gets_a_plain_sentence(private_space, chromium, tmp_path):
    url, _, _ = private_space
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are my notes, not a picture")
    page, frame = open_private_tab(chromium, url)
    try:
        assert check_on_device(frame, notes) == {}
        message = frame.locator("#private-message").inner_text()
        assert "not an image this browser can read" in message and "Nothing was sent" in message
        assert frame.locator("#private-result").get_attribute("data-state") == "error"
    finally:
        page.close()


def test_the_private_routes_serve_only_their_files_with_their_types(private_space, app_url):
    url, browser_model, _ = private_space
    base = f"{url}private"
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    wasm = httpx.head(f"{base}/runtime/ort-wasm-simd-threaded.asyncify.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    script = httpx.head(f"{base}/runtime/ort-wasm-simd-threaded.asyncify.mjs")
    assert script.headers["content-type"].startswith("text/javascript")
    model = httpx.head(f"{base}/model/{browser_model.key}/{export.MODEL_FILE}")
    assert model.status_code == 200 and model.headers["content-type"] == "application/octet-stream"
    for path in (
        f"/model/{browser_model.key}/check.json",  # on disk beside the model, but not served
        f"/model/not-{browser_model.key}/config.json",
        f"/model/{browser_model.key}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/runtime/..%2f..%2fstatus.json",
        "/runtime/transformers.js",
        "/secret.txt",
    ):
        answer = httpx.get(base + path)
        assert answer.status_code == 404, path
    # a Space with private mode off serves none of it (and has no tab)
    assert httpx.get(f"{app_url}private/status.json").status_code == 404
    assert "On this device" not in httpx.get(f"{app_url}config").text


def test_a_refused_browser_model_is_remembered(classifier, private_space, tmp_path, monkeypatch):
    _, browser_model, _ = private_space
    monkeypatch.setattr(export, "TOLERANCE", 0.0)  # no 8-bit model is that close: refused
    refused = BrowserModel(classifier, cache_dir=tmp_path, runtime_dir=browser_model.runtime_folder)
    refused.start(build="now")
    assert refused.state == "refused" and "differ from PyTorch" in refused.reason
    assert (tmp_path / "web" / refused.key / "refused.json").is_file()
    assert serve.page_status(refused, {}, {})["state"] == "refused"
    later = BrowserModel(classifier, cache_dir=tmp_path, runtime_dir=browser_model.runtime_folder)
    started = time.monotonic()
    later.start(build="now")
    assert later.state == "refused" and "earlier start" in later.reason
    assert time.monotonic() - started < 10  # no second build
    assert not [p for p in (tmp_path / "web").iterdir() if p.name.startswith(".")]


def test_export_web_works_from_a_plain_file_server(private_space, model_dir, chromium, tmp_path, web_cache):
    url, _, _ = private_space
    out = tmp_path / "site"
    env = {**os.environ, "NSFW_SPACE_CACHE_DIR": str(web_cache), "NSFW_SPACE_PRECISION": "fp32"}
    command = [sys.executable, "-m", "nsfw_space", "export-web", str(out), "--model", str(model_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").is_file() and (out / "status.json").is_file()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not an empty folder" in again.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                httpx.get(f"http://127.0.0.1:{port}/status.json")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        page = chromium.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("body[data-state=ready]").wait_for(timeout=120_000)
        photo = example_photos()[0]
        page.locator("#private-input").set_input_files(str(photo))
        page.locator("#private-result[data-state=done]").wait_for(timeout=60_000)
        on_device = json.loads(page.locator("#private-result").get_attribute("data-scores"))
        page.close()
    finally:
        server.terminate()
        server.wait(10)
    server_scores = Client(url, verbose=False).predict(handle_file(str(photo)), api_name="/classify")
    expected = {item["label"]: item["confidence"] for item in server_scores["confidences"]}
    assert max(abs(on_device[label] - expected[label]) for label in expected) <= TOLERANCE
    shutil.rmtree(out)
