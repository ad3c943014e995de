"""Private mode, measured: the browser model of a ViT-B/16 (plain, and the same function with outlier
channels), its check, its size; then in Debian's Chromium the time to the first result (model and
runtime downloaded from the Space on 127.0.0.1), the time per image on the page of its own
(cross-origin isolated: WASM threads) and inside the Space's tab (one thread); and the Space's own
CPU while 8 pages check images on the device in a loop, against 8 pages on the Image view.

    python benchmarks/private_mode.py [--workdir /tmp/nsfw-private] [--seconds 60] [--pages 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def build_models(workdir: Path) -> dict[str, Path]:
    from nsfw_space.tools.synthetic import VIT_BASE, build_model_dir, with_outlier_channels

    plain = workdir / "vitb-plain"
    if not (plain / "config.json").is_file():
        build_model_dir(plain, architecture=VIT_BASE)
    outliers = workdir / "vitb-outliers"
    if not (outliers / "config.json").is_file():
        with_outlier_channels(plain, outliers)
    return {"ViT-B/16": plain, "ViT-B/16, outlier channels x30": outliers}


def export_row(name: str, model_dir: Path, cache: Path) -> dict:
    from nsfw_space import NSFWClassifier
    from nsfw_space.web.building import BrowserModel

    classifier = NSFWClassifier.from_pretrained(
        str(model_dir), device="cpu", precision="fp32", optimize="none"
    )
    browser = BrowserModel(classifier, source=(str(model_dir), None), cache_dir=cache)
    started = time.monotonic()
    browser.start(build="now")
    status = browser.status()
    return {
        "model": name,
        "state": status["state"],
        "reason": status.get("reason", ""),
        "worst": status.get("worst_difference"),
        "MB": round((status.get("model_bytes") or 0) / 1e6, 1),
        "runtime MB": round((status.get("runtime_bytes") or 0) / 1e6, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def start_space(model_dir: Path, cache: Path, port: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        NSFW_SPACE_MODEL=str(model_dir),
        NSFW_SPACE_CACHE_DIR=str(cache),
        NSFW_SPACE_PRECISION="fp32",  # the int8 build stays out of the CPU figures
        NSFW_SPACE_PRIVATE_MODE="1",
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
    )
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/private/status.json").read())
            if status["state"] == "ready":
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the Space did not get its browser model ready within 300 s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def server_scores(url: str, photos: list[Path]) -> dict[str, dict[str, float]]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    answers = {}
    for photo in photos:
        result = client.predict(handle_file(str(photo)), api_name="/classify")
        answers[photo.name] = {item["label"]: item["confidence"] for item in result["confidences"]}
    return answers


def on_device_times(browser, url: str, photos: list[Path], inside_tab: bool, expected: dict) -> dict:
    context = browser.new_context()  # an empty browser cache: the download is part of the first result
    page = context.new_page()
    started = time.monotonic()
    if inside_tab:
        page.goto(url)
        page.get_by_role("tab", name="On this device").click()
        frame = page.frame_locator("#private-frame")
    else:
        page.goto(url + "private/")
        frame = page
    frame.locator("body[data-state=ready]").wait_for(timeout=300_000)
    times, first, worst, same = [], None, 0.0, True
    for i in range(12):
        photo = photos[i % len(photos)]
        frame.locator("#private-input").set_input_files(str(photo))
        frame.locator("#private-result[data-state=done]").wait_for(timeout=120_000)
        if first is None:
            first = time.monotonic() - started
        times.append(float(frame.locator("#private-result").get_attribute("data-ms")))
        scores = json.loads(frame.locator("#private-result").get_attribute("data-scores"))
        server = expected[photo.name]
        worst = max(worst, *(abs(scores[label] - server[label]) for label in server))
        same = same and max(scores, key=scores.get) == max(server, key=server.get)
        frame.locator("#private-result").evaluate("e => { e.dataset.state = 'waiting'; }")
    backend = frame.locator("#private-backend").inner_text()
    context.close()
    warm = times[2:]  # the first calls include WASM warm-up
    return {
        "vs /classify": round(worst, 4),
        "same label": same,
        "first result s": round(first, 1),
        "per image p50 ms": round(statistics.median(warm)),
        "max ms": round(max(warm)),
        "backend": backend,
    }


def pages_in_a_loop(
    browser, url: str, photos: list[Path], pages: int, seconds: float, pid: int, private: bool
) -> dict:
    """``pages`` pages checking images in a loop for ``seconds``: the Space's CPU meanwhile."""
    contexts, frames = [], []
    for _ in range(pages):
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + ("private/" if private else ""))
        if private:
            page.locator("body[data-state=ready]").wait_for(timeout=300_000)
        else:
            page.wait_for_selector("#image-input")
        contexts.append(context)
        frames.append(page)
    checks = 0
    before = cpu_seconds(pid)
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        for page in frames:
            photo = str(photos[checks % len(photos)])
            if private:
                page.locator("#private-result").evaluate("e => { e.dataset.state = 'waiting'; }")
                page.set_input_files("#private-input", photo)
            else:
                page.set_input_files("#image-input input[type=file]", photo)
            checks += 1
        for page in frames:
            if private:
                page.locator("#private-result[data-state=done]").wait_for(timeout=120_000)
            else:
                page.wait_for_selector("#verdict .verdict-normal, #verdict .verdict-nsfw", timeout=120_000)
    wall = time.monotonic() - began
    used = cpu_seconds(pid) - before
    for context in contexts:
        context.close()
    return {
        "view": "On this device" if private else "Image (server)",
        "pages": pages,
        "checks": checks,
        "seconds": round(wall),
        "Space CPU, % of one core": round(100 * used / wall, 1),
    }


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    lines = [" | ".join(k.ljust(widths[k]) for k in keys), "-+-".join("-" * widths[k] for k in keys)]
    lines += [" | ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/nsfw-private")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--fresh", action="store_true", help="build the browser models again")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / "cache"
    if args.fresh:
        shutil.rmtree(cache / "web", ignore_errors=True)
    from nsfw_space.media.samples import example_photos
    from nsfw_space.model.device import cpu_description

    print(
        f"CPU: {cpu_description()}; Chromium {subprocess.run(['chromium', '--version'], capture_output=True, text=True).stdout.strip()}"
    )
    models = build_models(workdir)
    exports = [export_row(name, path, cache) for name, path in models.items()]
    print(
        "\nThe browser model (8-bit ONNX), checked against PyTorch fp32 on the photos and 8 generated pictures"
    )
    print(table(exports))

    from playwright.sync_api import sync_playwright

    from tests.helpers import free_port

    photos = example_photos()
    port = free_port()
    space = start_space(models["ViT-B/16"], cache, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            expected = server_scores(url, photos)
            times = [
                {"where": "/private/ (own page)", **on_device_times(browser, url, photos, False, expected)},
                {"where": "Space tab (iframe)", **on_device_times(browser, url, photos, True, expected)},
            ]
            print("\nIn the browser, ViT-B/16 (the example photos, 12 checks; p50 of the last 10)")
            print(table(times))
            before = cpu_seconds(space.pid)
            time.sleep(args.seconds)
            idle = {
                "view": "(no page open)",
                "pages": 0,
                "checks": 0,
                "seconds": round(args.seconds),
                "Space CPU, % of one core": round(100 * (cpu_seconds(space.pid) - before) / args.seconds, 1),
            }
            loads = [
                idle,
                pages_in_a_loop(browser, url, photos, args.pages, args.seconds, space.pid, private=True),
                pages_in_a_loop(browser, url, photos, args.pages, args.seconds, space.pid, private=False),
            ]
            print(f"\nThe Space's process ({args.pages} pages in one Chromium, checking images in a loop)")
            print(table(loads))
            browser.close()
    finally:
        space.terminate()
        space.wait(20)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
