"""build_demo(classifier, settings) -> gr.Blocks: the Space's page and its named API endpoints.

No model is loaded here: the classifier is handed in, so tests can pass a tiny one.
Stable endpoints: ``/classify`` (image -> label dict) and ``/moderate`` (image, threshold -> JSON).
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from .batching import DynamicBatcher
from .classifier import NSFWClassifier, Prediction
from .config import Settings
from .device import gpu_task, on_zero_gpu
from .errors import InvalidImageError
from .loading import HUB_ID

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = PACKAGE_DIR.parent / "examples"
ASSETS_DIR = PACKAGE_DIR / "assets"

CSS = """
.verdict { font-size: 1.15rem; padding: 0.6rem 0.9rem; border-radius: 0.5rem; }
.verdict-nsfw { background: #fde2e1; color: #7f1d1d; border: 1px solid #f5a3a0; }
.verdict-normal { background: #dcfce7; color: #14532d; border: 1px solid #86efac; }
.verdict-pending { background: #f1f5f9; color: #334155; border: 1px solid #cbd5e1; }
/* Safe preview: an image stays blurred until it is known to be safe, or the user reveals it. */
#image-input img { filter: blur(28px); transition: filter 0.2s; }
.gradio-container:has(.verdict-normal) #image-input img,
.gradio-container:has(#reveal input:checked) #image-input img { filter: none; }
#label-bars .label-name, #label-bars dd, #label-bars span { font-size: 1rem; }
"""


def build_demo(classifier: NSFWClassifier, settings: Settings | None = None) -> gr.Blocks:
    """The whole page: image input, label bars, threshold and verdict, examples, and the API."""
    settings = settings or Settings()
    classifier = classifier.with_limits(
        max_pixels=settings.max_pixels, max_bytes=settings.max_file_bytes, frames=settings.frames
    )
    handlers = Handlers(classifier, settings)
    examples = example_paths()

    with gr.Blocks(title="NSFW image moderation", delete_cache=cache_schedule(settings)) as demo:
        gr.Markdown(intro_markdown(classifier))
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "webcam", "clipboard"],
                    label="Image (drop, paste or use the webcam)",
                    elem_id="image-input",
                    height=360,
                )
                gr.Checkbox(label="Show flagged images unblurred", value=False, elem_id="reveal")
            with gr.Column(scale=1, min_width=300):
                verdict = gr.HTML(verdict_html(None, settings.threshold), elem_id="verdict")
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=settings.threshold,
                    step=0.01,
                    label="Threshold: flag as NSFW when the nsfw score is at least",
                    elem_id="threshold",
                )
                label = gr.Label(
                    num_top_classes=len(classifier.labels), label="Label probabilities", elem_id="label-bars"
                )
                with gr.Accordion("Moderation result (JSON, as the /moderate API returns it)", open=False):
                    details = gr.JSON(label="Result", elem_id="details")
        if examples:
            gr.Examples(
                examples=[[str(path)] for path in examples], inputs=[image], label="Examples (safe for work)"
            )
        gr.Markdown(footer_markdown(classifier))

        # API-only door: same scoring, JSON out. Hidden button so the page stays simple.
        moderate_button = gr.Button("Moderate", visible=False)
        moderate_button.click(
            handlers.moderate,
            inputs=[image, threshold],
            outputs=details,
            api_name="moderate",
            preprocess=False,
            concurrency_id="model",
        )

        image.change(
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
        ).success(
            handlers.verdict_from_label,
            inputs=[label, threshold],
            outputs=[verdict, details],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        threshold.change(
            handlers.verdict_from_label,
            inputs=[label, threshold],
            outputs=[verdict, details],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    return demo


def launch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch()``: theme, CSS, favicon and upload limits."""
    options: dict[str, Any] = {
        "css": CSS,
        "theme": gr.themes.Soft(primary_hue="rose", secondary_hue="slate"),
        "max_file_size": settings.max_file_size,
        "show_error": True,
        "run_history": False,  # never keep what users uploaded, not even in their own browser
        "enable_monitoring": False,
        "footer_links": ["api", "gradio"],
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
        else:
            self.batcher = DynamicBatcher(classifier, settings.max_batch_size)
            self._predict = self.batcher.predict

    def classify(self, image: Any) -> dict[str, float] | None:
        """Score one image: returns every label of the model with its probability.

        Args:
            image: the image to score (JPEG, PNG, WebP, GIF, BMP, TIFF or ICO).
        """
        if image is None:
            return None
        return self._run(image).scores

    def moderate(self, image: Any, threshold: float | None = None) -> dict[str, Any]:
        """Moderate one image against a threshold.

        Args:
            image: the image to check (JPEG, PNG, WebP, GIF, BMP, TIFF or ICO).
            threshold: flag the image when its nsfw score is at least this (0 to 1; default 0.5).
        Returns:
            label, scores (every label's probability), nsfw_score, is_nsfw and threshold.
        """
        if image is None:
            raise gr.Error("No image was given. Upload an image and try again.", print_exception=False)
        limit = _threshold(threshold, self.settings.threshold)
        return self._run(image).to_dict(limit)

    def verdict_from_label(self, label: Any, threshold: float | None) -> tuple[str, Any]:
        """Recompute the verdict from the bars already shown (no model call)."""
        limit = _threshold(threshold, self.settings.threshold)
        scores = label_scores(label)
        if not scores:
            return verdict_html(None, limit), None
        prediction = self.classifier.prediction_from_scores(scores)
        return verdict_html(prediction, limit), prediction.to_dict(limit)

    def _run(self, image: Any) -> Prediction:
        source = payload_source(image)
        try:
            return self._predict(source)
        except InvalidImageError as err:
            raise gr.Error(str(err), title="This file can't be checked", print_exception=False) from None


def payload_source(payload: Any) -> str | bytes:
    """What Gradio hands over for an image (a FileData dict, a path, or a data: URL) -> path or bytes."""
    if isinstance(payload, (str, os.PathLike)):
        return os.fspath(payload)
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump()
    if isinstance(payload, dict):
        if payload.get("path"):
            return str(payload["path"])
        url = payload.get("url") or ""
        if url.startswith("data:") and "," in url:
            header, data = url.split(",", 1)
            if ";base64" in header:
                return base64.b64decode(data, validate=False)
    raise gr.Error(
        "The upload did not arrive as an image file. Try uploading it again.", print_exception=False
    )


def label_scores(label: Any) -> dict[str, float]:
    """gr.Label's value (``{"label": ..., "confidences": [...]}`` or a plain dict) -> {label: prob}."""
    if not isinstance(label, dict):
        return {}
    if "confidences" in label:
        return {str(item["label"]): float(item["confidence"]) for item in label.get("confidences") or []}
    return {str(name): float(value) for name, value in label.items() if isinstance(value, (int, float))}


def verdict_html(prediction: Prediction | str | None, threshold: float) -> str:
    """The plain verdict line under the image."""
    if prediction is None:
        return '<div class="verdict verdict-empty">Drop, paste or capture an image to check it.</div>'
    if prediction == "pending":
        return '<div class="verdict verdict-pending">Checking the image…</div>'
    assert isinstance(prediction, Prediction)
    score = prediction.nsfw_score
    if prediction.is_nsfw(threshold):
        return (
            f'<div class="verdict verdict-nsfw"><strong>Flagged as NSFW</strong>: nsfw score {score:.2f} '
            f"is at or above the threshold {threshold:.2f}. The preview stays blurred.</div>"
        )
    return (
        f'<div class="verdict verdict-normal"><strong>Looks safe</strong>: nsfw score {score:.2f} '
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


def _threshold(value: float | None, default: float) -> float:
    if value is None:
        return default
    try:
        limit = float(value)
    except (TypeError, ValueError):
        raise gr.Error(
            f"The threshold must be a number between 0 and 1, not {value!r}.", print_exception=False
        ) from None
    if not 0.0 <= limit <= 1.0:
        raise gr.Error(f"The threshold must be between 0 and 1, not {limit}.", print_exception=False)
    return limit
