"""Screenshots of the main views for the README, taken in Debian's Chromium with Playwright.

    python scripts/screenshots.py [--model DIR] [--out docs]

Starts the Space on 127.0.0.1 with the given model (default: a tiny offline stand-in made so that
the safe-for-work examples score low and one synthetic test card scores high, so no download is
needed and the page looks as it would; its scores are still not the real model's), fills each
view and saves image.png, batch.png, video.png and phone.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model directory or hub id (default: a tiny stand-in model)"
    )
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs")
    args = parser.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from nsfw_space import NSFWClassifier, Settings
    from nsfw_space.space.demo import create_demo, example_paths, launch_options
    from nsfw_space.tools.synthetic import build_standin_model_dir, test_card

    work = Path(tempfile.mkdtemp(prefix="nsfw-shots-"))
    safe = [Image.open(path).convert("RGB") for path in example_paths()]
    card = work / "synthetic-test-card.png"
    test_card().save(card)
    model = args.model or str(build_standin_model_dir(work / "standin", safe, [test_card()]))
    settings = Settings(model=model)
    demo = create_demo(NSFWClassifier.from_settings(settings), settings)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_options(settings)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = [image.resize((160, 120)) for image in safe] * 2 + [test_card((160, 120))] * 3 + safe[:2]
    gif = work / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=120, loop=0)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url)
            page.wait_for_selector("#image-input")
            page.set_input_files("#image-input input[type=file]", str(example_paths()[0]))
            page.wait_for_selector("#verdict .verdict-normal")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "image.png"))

            page.get_by_role("tab", name="Batch").click()
            page.set_input_files("#batch-files input[type=file]", [*map(str, example_paths()), str(card)])
            page.locator("#batch-button").click()
            page.locator("#batch-gallery img").nth(4).wait_for(timeout=60_000)  # all five checked
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "batch.png"), full_page=True)

            page.get_by_role("tab", name="GIF / video").click()
            page.set_input_files("#media-file input[type=file]", str(gif))
            page.locator("#media-button").click()
            page.wait_for_selector("#media-plot canvas, #media-plot svg", timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "video.png"))

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(url)
            phone.wait_for_selector("#image-input")
            phone.wait_for_timeout(800)
            phone.screenshot(path=str(out / "phone.png"))
            browser.close()
    finally:
        demo.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main()
