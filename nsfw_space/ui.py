"""build_demo(classifier, settings) -> gr.Blocks: the Space's page and its named API endpoints.

No model is loaded here: the classifier is handed in, so tests can pass a tiny one.
Stable endpoints: ``/classify`` (image -> label dict) and ``/moderate`` (image, threshold -> JSON).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageFilter
from starlette.middleware import Middleware

from .batching import DynamicBatcher
from .bodylimit import BodyLimit, body_limit_for
from .budgets import PixelBudget, start_memory_trimmer
from .classifier import NSFWClassifier, Prediction
from .config import Settings
from .device import gpu_task, on_zero_gpu
from .errors import InvalidImageError
from .fetch import fetch_image_bytes
from .frames import RULES
from .images import load_image
from .loading import HUB_ID
from .payloads import display_name, payload_source, plain_file_schema
from .writers import csv_row

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = PACKAGE_DIR.parent / "examples"
ASSETS_DIR = PACKAGE_DIR / "assets"

CSS = """
.verdict { font-size: 1.15rem; padding: 0.6rem 0.9rem; border-radius: 0.5rem; }
.verdict-nsfw { background: #fde2e1; color: #7f1d1d; border: 1px solid #f5a3a0; }
.verdict-normal { background: #dcfce7; color: #14532d; border: 1px solid #86efac; }
.verdict-pending { background: #f1f5f9; color: #334155; border: 1px solid #cbd5e1; }
.verdict-error { background: #fef3c7; color: #78350f; border: 1px solid #fcd34d; }
.dark .verdict-nsfw { background: #450a0a; color: #fecaca; border-color: #7f1d1d; }
.dark .verdict-normal { background: #052e16; color: #bbf7d0; border-color: #166534; }
.dark .verdict-pending { background: #1e293b; color: #e2e8f0; border-color: #334155; }
.dark .verdict-error { background: #451a03; color: #fde68a; border-color: #92400e; }
/* Safe preview: an image stays blurred until it is known to be safe, or the user reveals it.
   SAFE_PREVIEW_JS marks the input "judged-safe" while the verdict says so. */
#image-input img { filter: blur(28px); transition: filter 0.2s; }
#image-input.judged-safe img,
.gradio-container:has(#reveal input:checked) #image-input img { filter: none; }
#label-bars .label-name, #label-bars dd, #label-bars span { font-size: 1rem; }
"""

SAFE_PREVIEW_JS = """
() => {
  const sync = () => {
    const input = document.querySelector('#image-input');
    if (input) input.classList.toggle('judged-safe', !!document.querySelector('#verdict .verdict-normal'));
  };
  new MutationObserver(sync).observe(document.body, {subtree: true, childList: true, characterData: true});
  sync();
}
"""


DEFAULT_K = 2  # k-of-n's k, the same on the page, in the API and in the CLI
MAX_SAMPLED_FRAMES = 64


def build_demo(classifier: NSFWClassifier, settings: Settings | None = None) -> gr.Blocks:
    """The whole page: single image, batch and GIF/video views, examples, and the named API."""
    settings = settings or Settings()
    classifier = classifier.with_limits(limits=settings.decode_limits, frames=settings.frames)
    if settings.mcp:
        from . import mcp_compat

        mcp_compat.install()
    start_memory_trimmer()
    handlers = Handlers(classifier, settings)
    examples = example_paths()
    bar_count = len(classifier.labels)

    with gr.Blocks(title="NSFW image moderation", delete_cache=cache_schedule(settings)) as demo:
        gr.Markdown(intro_markdown(classifier))
        with gr.Group():
            threshold = gr.Slider(
                0.0,
                1.0,
                value=settings.threshold,
                step=0.01,
                label="Threshold: flag when the nsfw score is at least",
                elem_id="threshold",
            )
            gr.Checkbox(label="Show flagged images unblurred", value=False, elem_id="reveal")
        with gr.Tabs():
            with gr.Tab("Image", id="image-tab"), gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    image = gr.Image(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "webcam", "clipboard"],
                        label="Image (drop, paste or use the webcam)",
                        elem_id="image-input",
                        height=360,
                    )
                    with gr.Row(equal_height=False):
                        url = gr.Textbox(
                            label="…or an image URL (http/https)",
                            placeholder="https://example.com/photo.jpg",
                            elem_id="image-url",
                            scale=4,
                        )
                        url_button = gr.Button("Check URL", elem_id="url-button", scale=1, min_width=100)
                with gr.Column(scale=1, min_width=300):
                    verdict = gr.HTML(verdict_html(None, settings.threshold), elem_id="verdict")
                    label = gr.Label(
                        num_top_classes=bar_count, label="Label probabilities", elem_id="label-bars"
                    )
                    with gr.Accordion(
                        "Moderation result (JSON, as the /moderate API returns it)", open=False
                    ):
                        details = gr.JSON(label="Result", elem_id="details")
            with gr.Tab("Batch", id="batch-tab"):
                with gr.Row(equal_height=False):
                    batch_files = gr.File(
                        file_count="multiple",
                        label=f"Images, GIFs or videos (up to {settings.max_batch_files})",
                        elem_id="batch-files",
                    )
                    batch_urls = gr.Textbox(
                        label="…and/or image URLs, one per line", lines=5, elem_id="batch-urls"
                    )
                batch_button = gr.Button("Check all", variant="primary", elem_id="batch-button")
                batch_table = gr.Dataframe(
                    headers=["file", "label", "nsfw score", "verdict"],
                    label="Results",
                    interactive=False,
                    wrap=True,
                    elem_id="batch-table",
                )
                batch_csv = gr.File(label="Results as CSV", elem_id="batch-csv")
                batch_gallery = gr.Gallery(
                    label="Thumbnails (flagged ones blurred)",
                    columns=6,
                    height="auto",
                    elem_id="batch-gallery",
                )
                batch_json = gr.JSON(visible=False, label="results")
            with gr.Tab("GIF / video", id="video-tab"), gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    media = gr.File(
                        label="Animated GIF/WebP or a short video (mp4, webm, mov)",
                        file_types=[".gif", ".webp", ".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"],
                        elem_id="media-file",
                    )
                    rule = gr.Radio(
                        [
                            ("worst frame (max)", "max"),
                            ("average (mean)", "mean"),
                            ("at least k frames", "k-of-n"),
                        ],
                        value="max",
                        label="Sum the frames up by",
                        elem_id="frame-rule",
                    )
                    with gr.Row():
                        min_frames = gr.Number(
                            value=DEFAULT_K, minimum=1, precision=0, label="k", elem_id="min-frames"
                        )
                        frame_count = gr.Number(
                            value=settings.frames,
                            minimum=1,
                            maximum=MAX_SAMPLED_FRAMES,
                            precision=0,
                            step=1,
                            label=f"frames sampled (1 to {MAX_SAMPLED_FRAMES})",
                            elem_id="frame-count",
                        )
                    media_button = gr.Button("Check frames", variant="primary", elem_id="media-button")
                with gr.Column(scale=1, min_width=300):
                    media_verdict = gr.HTML(verdict_html(None, settings.threshold), elem_id="media-verdict")
                    media_plot = gr.LinePlot(
                        x="time (s)",
                        y="nsfw score",
                        color="series",
                        y_lim=[0, 1],
                        label="nsfw score over time",
                        elem_id="media-plot",
                    )
                    media_json = gr.JSON(label="Result", elem_id="media-json")
        if examples:
            gr.Examples(
                examples=[[str(path)] for path in examples], inputs=[image], label="Examples (safe for work)"
            )
        gr.Markdown(footer_markdown(classifier))

        # --- the named API (stable) -------------------------------------------------------
        # Each is a hidden button's click, so the page stays simple while the API gets its name.
        for handler, inputs, output, name in (
            (handlers.moderate, [image, threshold, url], details, "moderate"),
            (handlers.moderate_batch, [batch_files, threshold, batch_urls], batch_json, "moderate_batch"),
            (
                handlers.moderate_frames,
                [media, threshold, rule, min_frames, frame_count],
                media_json,
                "moderate_frames",
            ),
        ):
            gr.Button(visible=False).click(
                handler,
                inputs=inputs,
                outputs=output,
                api_name=name,
                preprocess=False,
                concurrency_id="model",
            )

        # --- the page's own events ----------------------------------------------------------
        classified = image.change(
            lambda value, limit: (verdict_html("pending" if value else None, limit), None),
            inputs=[image, threshold],
            outputs=[verdict, details],
            queue=False,
            preprocess=False,
            api_visibility="private",
            show_progress="hidden",
        ).then(
            handlers.classify,
            inputs=image,
            outputs=label,
            api_name="classify",
            preprocess=False,
            concurrency_id="model",
            show_progress="minimal",
        )
        classified.success(
            handlers.verdict_from_label,
            inputs=[label, threshold],
            outputs=[verdict, details],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        classified.failure(
            lambda limit: verdict_html("error", limit),
            inputs=threshold,
            outputs=verdict,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        gr.on(
            [url_button.click, url.submit],
            handlers.url_view,
            inputs=[url, threshold],
            outputs=[label, verdict, details],
            api_visibility="private",
            concurrency_id="model",
        )
        threshold.change(
            handlers.verdict_from_label,
            inputs=[label, threshold],
            outputs=[verdict, details],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        media_button.click(
            handlers.frames_view,
            inputs=[media, threshold, rule, min_frames, frame_count],
            outputs=[media_verdict, media_plot, media_json],
            api_visibility="private",
            preprocess=False,
            concurrency_id="model",
        )
        batch_button.click(
            handlers.batch_view,
            inputs=[batch_files, threshold, batch_urls],
            outputs=[batch_table, batch_csv, batch_gallery],
            api_visibility="private",
            preprocess=False,
            concurrency_id="model",
        )
    for component in (batch_files, media):
        _describe_plainly(component)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    return demo


def _describe_plainly(component: gr.components.Component) -> None:
    """Let ``view_api`` describe a file input in one sentence, not Gradio's FileData docstring."""
    original = component.api_info

    def api_info() -> dict[str, Any]:
        return plain_file_schema(original())

    component.api_info = api_info  # type: ignore[method-assign]


def launch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch()``: theme, CSS, favicon and upload limits."""
    options: dict[str, Any] = {
        "css": CSS,
        "js": SAFE_PREVIEW_JS,
        "theme": gr.themes.Soft(primary_hue="rose", secondary_hue="slate"),
        "max_file_size": settings.max_file_size,
        "show_error": True,
        "run_history": False,  # never keep what users uploaded, not even in their own browser
        "enable_monitoring": False,
        "footer_links": ["api", "gradio"],
        # JSON bodies no larger than a data: URL of the largest allowed file (see bodylimit.py)
        "app_kwargs": {
            "middleware": [Middleware(BodyLimit, max_bytes=body_limit_for(settings.max_file_bytes))]
        },
    }
    favicon = ASSETS_DIR / "favicon.png"
    if favicon.is_file():
        options["favicon_path"] = str(favicon)
    if settings.mcp:
        options["mcp_server"] = True
    return options


class Handlers:
    """The event handlers; each is a pure function of its inputs and the (read-only) classifier."""

    def __init__(self, classifier: NSFWClassifier, settings: Settings) -> None:
        self.classifier = classifier
        self.settings = settings
        if on_zero_gpu():  # the GPU exists only inside the request's own spaces.GPU call
            self._predict = gpu_task(classifier.predict)
            self._score_all = gpu_task(self._score_sources)
        else:
            self.batcher = DynamicBatcher(classifier, settings.max_batch_size)
            self._predict = self.batcher.predict
            self._score_all = self._score_sources

    # --- API endpoints (their docstrings are the API's and the MCP tools' descriptions) ------
    def classify(self, image: Any = None) -> dict[str, float] | None:
        """Score one image: returns every label of the model with its probability.

        Args:
            image: the image to score (JPEG, PNG, WebP, GIF, BMP, TIFF or ICO), as an upload, a data: URL or an http(s) URL.
        """
        if image is None:
            return None
        return self._run(self._source(image)).scores

    def moderate(
        self, image: Any = None, threshold: float | None = None, url: str | None = None
    ) -> dict[str, Any]:
        """Moderate one image (an upload, or an http/https URL) against a threshold.

        Args:
            image: the image to check (JPEG, PNG, WebP, GIF, BMP, TIFF or ICO), as an upload or a data: URL; leave empty when url is given.
            threshold: flag the image when its nsfw score is at least this (0 to 1; default 0.5).
            url: an http(s) URL of an image, used when no image is uploaded.
        Returns:
            label, scores (every label's probability), nsfw_score, is_nsfw and threshold.
        """
        limit = _threshold(threshold, self.settings.threshold)
        url = _optional_text(url, "url")
        if image is not None:
            source = self._source(image)
        elif url:
            source = self._fetch(url)
        else:
            raise gr.Error("No image was given. Upload an image or give its URL.", print_exception=False)
        return self._run(source).to_dict(limit)

    def moderate_batch(
        self, files: Any = None, threshold: float | None = None, urls: str | None = None, progress: Any = None
    ) -> list[dict[str, Any]]:
        """Moderate many images, GIFs or videos (uploads and/or http/https URLs) at once.

        Args:
            files: the files to check (uploads or data: URLs); may be empty when urls are given.
            threshold: flag a file when its nsfw score is at least this (0 to 1; default 0.5).
            urls: image URLs, one per line.
        Returns:
            one entry per file, in order: file, label, scores, nsfw_score, is_nsfw, threshold, error.
        """
        limit = _threshold(threshold, self.settings.threshold)
        return self._moderate_named(self._batch_sources(files, urls), limit, progress)

    def _moderate_named(
        self, named: list[tuple[str, str | bytes | InvalidImageError]], limit: float, progress: Any
    ) -> list[dict[str, Any]]:
        outcomes = self._score_all([source for _, source in named], progress)
        rows = []
        for (name, _), outcome in zip(named, outcomes, strict=True):
            if isinstance(outcome, Prediction):
                rows.append({"file": name, **outcome.to_dict(limit), "error": ""})
            else:
                rows.append(
                    {
                        "file": name,
                        "label": None,
                        "scores": None,
                        "nsfw_score": None,
                        "is_nsfw": None,
                        "threshold": limit,
                        "error": str(outcome),
                    }
                )
        return rows

    def moderate_frames(
        self,
        media: Any = None,
        threshold: float | None = None,
        rule: str = "max",
        k: int = DEFAULT_K,
        frames: int = 8,
    ) -> dict[str, Any]:
        """Moderate an animated GIF/WebP or a short video from evenly spaced frames.

        Args:
            media: the GIF, WebP or video file (mp4, webm, mov, mkv, avi), as an upload or a data: URL.
            threshold: flag when the summed-up nsfw score is at least this (0 to 1; default 0.5).
            rule: how frames are summed up: max (worst frame), mean, or k-of-n (at least k frames).
            k: for k-of-n, how many frames must reach the threshold (at most the frames there are).
            frames: how many frames to sample (1 to 64).
        Returns:
            label, scores, nsfw_score, is_nsfw, threshold, rule, k (as applied), frame_scores and frame_times.
        """
        if media is None:
            raise gr.Error("No file was given. Upload a GIF or a video.", print_exception=False)
        limit = _threshold(threshold, self.settings.threshold)
        if not isinstance(rule, str) or rule not in RULES:
            raise gr.Error(f"The rule must be one of {', '.join(RULES)}.", print_exception=False)
        count = _whole_number(frames, "frames", 1, MAX_SAMPLED_FRAMES, default=self.settings.frames)
        at_least = _whole_number(k, "k", 1, MAX_SAMPLED_FRAMES, default=DEFAULT_K)
        view = self.classifier.with_limits(frames=count)
        predict = gpu_task(view.predict) if on_zero_gpu() else view.predict
        source = self._source(media)
        budget = PixelBudget(self.settings.max_request_pixels)
        try:
            prediction = predict(source, rule=rule, k=at_least, budget=budget)
        except InvalidImageError as err:
            raise gr.Error(str(err), title="This file can't be checked", print_exception=False) from None
        result = prediction.to_dict(limit)
        result.setdefault("frame_scores", [round(prediction.nsfw_score, 6)])
        result.setdefault("frame_times", [0.0])
        result.update(rule=rule, k=min(at_least, len(result["frame_scores"])))
        return result

    # --- page-only views -------------------------------------------------------------------------
    def verdict_from_label(self, label: Any, threshold: float | None) -> tuple[str, Any]:
        """Recompute the verdict from the bars already shown (no model call)."""
        limit = _threshold(threshold, self.settings.threshold)
        scores = label_scores(label)
        if not scores:
            return verdict_html(None, limit), None
        prediction = self.classifier.prediction_from_scores(scores)
        return verdict_html(prediction, limit), prediction.to_dict(limit)

    def url_view(self, url: str, threshold: float | None) -> tuple[dict[str, float], str, dict[str, Any]]:
        """The image tab's URL box: bars, verdict and JSON for the image at ``url``."""
        limit = _threshold(threshold, self.settings.threshold)
        url = _optional_text(url, "url")
        if not url:
            raise gr.Error("Type or paste an image URL first.", print_exception=False)
        prediction = self._run(self._fetch(url))
        return prediction.scores, verdict_html(prediction, limit), prediction.to_dict(limit)

    def batch_view(
        self,
        files: Any,
        threshold: float | None,
        urls: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's idiom for a progress bar
    ) -> tuple[list[list[Any]], str, list[tuple[Image.Image, str]]]:
        """The batch tab: a results table, the table as CSV, and thumbnails (flagged ones blurred)."""
        limit = _threshold(threshold, self.settings.threshold)
        named = self._batch_sources(files, urls)  # fetched once: rows and thumbnails share it
        rows = self._moderate_named(named, limit, progress)
        table = [
            [
                row["file"],
                row["label"] or "",
                "" if row["nsfw_score"] is None else f"{row['nsfw_score']:.3f}",
                _verdict_word(row),
            ]
            for row in rows
        ]
        csv_path = write_csv(rows, self.classifier.labels)
        gallery = []
        for (_, source), row in zip(named, rows, strict=True):
            if row["error"]:
                continue
            gallery.append(
                (thumbnail(source, blur=bool(row["is_nsfw"])), f"{row['file']}: {_verdict_word(row)}")
            )
        return table, csv_path, gallery

    def frames_view(
        self, media: Any, threshold: float | None, rule: str, k: float, frames: float
    ) -> tuple[str, Any, dict[str, Any]]:
        """The GIF/video tab: verdict, the nsfw score over time (with the threshold), and the JSON."""
        import pandas as pd

        result = self.moderate_frames(media, threshold, rule, k, frames)
        limit = result["threshold"]
        times, scores = result["frame_times"], result["frame_scores"]
        plot = pd.DataFrame(
            {
                "time (s)": [*times, times[0], times[-1]],
                "nsfw score": [*scores, limit, limit],
                "series": ["nsfw score"] * len(scores) + ["threshold"] * 2,
            }
        )
        prediction = Prediction(scores=result["scores"], nsfw_score=result["nsfw_score"])
        return verdict_html(prediction, limit, rule=rule, k=result["k"]), plot, result

    # --- helpers ---------------------------------------------------------------------------------
    def _run(self, source: str | bytes) -> Prediction:
        try:
            return self._predict(source, budget=PixelBudget(self.settings.max_request_pixels))
        except InvalidImageError as err:
            raise gr.Error(str(err), title="This file can't be checked", print_exception=False) from None

    def _source(self, payload: Any) -> str | bytes:
        """A caller's file payload -> a received file's path or bytes (see :mod:`.payloads`)."""
        try:
            return self._source_or_error(payload)
        except InvalidImageError as err:
            raise gr.Error(str(err), title="This file can't be checked", print_exception=False) from None

    def _source_or_error(self, payload: Any) -> str | bytes:
        fetch = self._fetch_or_error if self.settings.allow_urls else None
        return payload_source(payload, max_bytes=self.settings.max_file_bytes, fetch=fetch)

    def _fetch(self, url: str) -> bytes:
        try:
            return self._fetch_or_error(url)
        except InvalidImageError as err:
            raise gr.Error(str(err), title="This URL can't be checked", print_exception=False) from None

    def _fetch_or_error(self, url: str, max_bytes: int | None = None) -> bytes:
        if not self.settings.allow_urls:
            raise InvalidImageError("This Space does not fetch URLs; upload the image instead.")
        limit = (
            self.settings.max_file_bytes
            if max_bytes is None
            else min(max_bytes, self.settings.max_file_bytes)
        )
        return fetch_image_bytes(
            url,
            max_bytes=limit,
            timeout=self.settings.url_timeout,
            allow_private=self.settings.allow_private_urls,
        )

    def _batch_sources(
        self, files: Any, urls: str | None
    ) -> list[tuple[str, str | bytes | InvalidImageError]]:
        """Name and open every file and URL of a batch: counted and checked before anything is
        fetched; URLs then share one download budget. A bad entry becomes its own error row."""
        if files is not None and not isinstance(files, (list, tuple)):
            raise gr.Error("files must be a list of files.", print_exception=False)
        lines = [line.strip() for line in (_optional_text(urls, "urls") or "").splitlines() if line.strip()]
        total = len(files or []) + len(lines)
        if not total:
            raise gr.Error("No files were given. Add images (or URLs) and try again.", print_exception=False)
        if total > self.settings.max_batch_files:
            raise gr.Error(
                f"{total} files were given; at most {self.settings.max_batch_files} are checked at once. "
                "Split them into smaller batches, or use `nsfw-space scan` for folders.",
                print_exception=False,
            )
        named: list[tuple[str, str | bytes | InvalidImageError]] = []
        for item in files or []:
            named.append((_unique(display_name(item), named), self._opened(self._source_or_error, item)))
        download_left = self.settings.max_batch_download_bytes
        for line in lines:
            if download_left <= 0:
                source: str | bytes | InvalidImageError = InvalidImageError(
                    f"This batch has already downloaded {self.settings.max_batch_download} from its URLs, "
                    "its limit; check the remaining URLs in another batch."
                )
            else:
                source = self._opened(self._fetch_or_error, line, download_left)
            if isinstance(source, bytes):
                download_left -= len(source)
            named.append((_unique(line, named), source))
        return named

    @staticmethod
    def _opened(open_one: Any, *args: Any) -> str | bytes | InvalidImageError:
        try:
            return open_one(*args)
        except InvalidImageError as err:
            return err

    def _score_sources(
        self, sources: list[Any], progress: Any = None
    ) -> list[Prediction | InvalidImageError]:
        outcomes: list[Prediction | InvalidImageError] = []
        readable = [s for s in sources if not isinstance(s, InvalidImageError)]
        results = iter(
            self.classifier.iter_predictions(
                readable,
                batch_size=self.settings.batch_size,
                budget=PixelBudget(self.settings.max_request_pixels),
            )
        )
        for index, source in enumerate(sources):
            if isinstance(source, InvalidImageError):
                outcomes.append(source)
            else:
                outcomes.append(next(results)[1])
            if progress is not None:
                progress((index + 1, len(sources)), desc="Checking", unit="files")
        return outcomes


def _unique(name: str, taken: list[tuple[str, Any]]) -> str:
    names = {existing for existing, _ in taken}
    if name not in names:
        return name
    counter = 2
    while f"{name} ({counter})" in names:
        counter += 1
    return f"{name} ({counter})"


def _verdict_word(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"error: {row['error']}"
    return "NSFW" if row["is_nsfw"] else "safe"


def thumbnail(source: str | bytes, size: int = 256, blur: bool = False) -> Image.Image:
    """A small preview; blurred beyond recognition when ``blur`` (for flagged files)."""
    frame = load_image(source, draft_size=(size, size))
    frame.thumbnail((size, size))
    if blur:
        frame = frame.filter(ImageFilter.GaussianBlur(radius=max(8, size // 10)))
    return frame


def write_csv(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """The batch results as a CSV file in Gradio's cache folder (deleted with the uploads)."""
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio") / "nsfw-space"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"moderation-{uuid.uuid4().hex[:12]}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_row(["file", "label", *labels, "nsfw_score", "is_nsfw", "threshold", "error"]))
        for row in rows:
            scores = row.get("scores") or {}
            writer.writerow(
                csv_row(
                    [
                        row["file"],
                        row["label"] or "",
                        *[scores.get(label, "") for label in labels],
                        "" if row["nsfw_score"] is None else row["nsfw_score"],
                        "" if row["is_nsfw"] is None else row["is_nsfw"],
                        row["threshold"],
                        row["error"],
                    ]
                )
            )
    return str(path)


def label_scores(label: Any) -> dict[str, float]:
    """gr.Label's value (``{"label": ..., "confidences": [...]}`` or a plain dict) -> {label: prob}."""
    if not isinstance(label, dict):
        return {}
    if "confidences" in label:
        return {str(item["label"]): float(item["confidence"]) for item in label.get("confidences") or []}
    return {str(name): float(value) for name, value in label.items() if isinstance(value, (int, float))}


def verdict_html(prediction: Prediction | str | None, threshold: float, rule: str = "", k: int = 1) -> str:
    """The plain verdict line under the image."""
    if prediction is None:
        return '<div class="verdict verdict-empty">Drop, paste or capture an image to check it.</div>'
    if prediction == "pending":
        return '<div class="verdict verdict-pending">Checking the image…</div>'
    if prediction == "error":
        return '<div class="verdict verdict-error">This file could not be checked: see the message.</div>'
    assert isinstance(prediction, Prediction)
    score = prediction.nsfw_score
    how = {"max": " (worst frame)", "mean": " (frame average)", "k-of-n": f" (at least {k} frames)"}.get(
        rule, ""
    )
    if prediction.is_nsfw(threshold):
        return (
            f'<div class="verdict verdict-nsfw"><strong>Flagged as NSFW</strong>: nsfw score{how} {score:.2f} '
            f"is at or above the threshold {threshold:.2f}. The preview stays blurred.</div>"
        )
    return (
        f'<div class="verdict verdict-normal"><strong>Looks safe</strong>: nsfw score{how} {score:.2f} '
        f"is below the threshold {threshold:.2f}.</div>"
    )


def example_paths() -> list[Path]:
    """The safe-for-work example images shipped in ``examples/``."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))


def cache_schedule(settings: Settings) -> tuple[int, int]:
    """Gradio's ``delete_cache``: check every few minutes, delete uploads older than the setting."""
    age = max(60, settings.cache_minutes * 60)
    return (max(60, age // 2), age)


def intro_markdown(classifier: NSFWClassifier) -> str:
    labels = ", ".join(f"`{label}`" for label in classifier.labels)
    name = classifier.name
    model = f"[{name}](https://huggingface.co/{name})" if HUB_ID.fullmatch(name) else f"`{Path(name).name}`"
    return f"""# NSFW image moderation
Scores an image with the vision transformer **{model}**
(labels {labels}). Drop, paste or capture an image: the label bars update at once, and the
threshold turns the score into a verdict. Previews stay blurred until an image is judged safe.

**What it is for:** flagging explicit images for a human to review. **What it is not for:**
judging people, their age or identity, or removing content with no human in the loop: it misses
most mildly suggestive images and can be wrong on art, medicine and swimwear."""


def footer_markdown(classifier: NSFWClassifier) -> str:
    return (
        f"Running on {classifier.device.type.upper()} in {classifier.precision}. "
        "Uploads are not logged or kept: Gradio's temporary copies are deleted within minutes. "
        "Use this Space from code: see *Use via API* below."
    )


def _threshold(value: Any, default: float) -> float:
    """A caller's threshold: a number from 0 to 1 (not a boolean, not NaN), else one sentence."""
    if value is None:
        return default
    limit = _number(value)
    if limit is None or not 0.0 <= limit <= 1.0:
        raise gr.Error(
            f"The threshold must be a number between 0 and 1, not {_shown(value)}.", print_exception=False
        )
    return limit


def _whole_number(value: Any, name: str, low: int, high: int, *, default: int) -> int:
    """A caller's count: a whole number from ``low`` to ``high`` (2.0 is 2), else one sentence."""
    if value is None:
        return default
    number = _number(value)
    if number is None or number != int(number) or not low <= number <= high:
        raise gr.Error(
            f"{name} must be a whole number from {low} to {high}, not {_shown(value)}.", print_exception=False
        )
    return int(number)


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for booleans, text that is no number, NaN and infinities."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _optional_text(value: Any, name: str) -> str:
    """A caller's optional text field, stripped; anything but text (or nothing) is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise gr.Error(f"{name} must be text, not {_shown(value)}.", print_exception=False)
    return value.strip()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
