"""What the page shows: the verdict line, the intro and footer, thumbnails, label bars read back."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter

from nsfw_space.media.images import load_image
from nsfw_space.model.classifier import NSFWClassifier
from nsfw_space.model.loading import HUB_ID
from nsfw_space.model.prediction import Prediction


def verdict_word(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"error: {row['error']}"
    return {"block": "NSFW: block", "review": "review"}.get(row.get("decision") or "", "safe")


def thumbnail(source: str | bytes, size: int = 256, blur: bool = False) -> Image.Image:
    """A small preview; blurred beyond recognition when ``blur`` (for flagged files)."""
    frame = load_image(source, draft_size=(size, size))
    frame.thumbnail((size, size))
    if blur:
        frame = frame.filter(ImageFilter.GaussianBlur(radius=max(8, size // 10)))
    return frame


def label_scores(label: Any) -> dict[str, float]:
    """gr.Label's value (``{"label": ..., "confidences": [...]}`` or a plain dict) -> {label: prob}."""
    if not isinstance(label, dict):
        return {}
    if "confidences" in label:
        return {str(item["label"]): float(item["confidence"]) for item in label.get("confidences") or []}
    return {str(name): float(value) for name, value in label.items() if isinstance(value, (int, float))}


def verdict_html(
    prediction: Prediction | str | None,
    threshold: float,
    rule: str = "",
    k: int = 1,
    review: float | None = None,
) -> str:
    """The plain verdict line under the image: block, review (when the policy has a review band)
    or allow, each in its own style."""
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
    if review is not None and review < threshold and score >= review:
        return (
            f'<div class="verdict verdict-review"><strong>Send to a person for review</strong>: nsfw score{how} '
            f"{score:.2f} is between the review threshold {review:.2f} and the block threshold "
            f"{threshold:.2f}. The preview stays blurred.</div>"
        )
    return (
        f'<div class="verdict verdict-normal"><strong>Looks safe</strong>: nsfw score{how} {score:.2f} '
        f"is below the threshold {threshold:.2f}.</div>"
    )


def known_image_html(match: dict[str, Any]) -> str:
    """The verdict for an image on one of the desk's lists: the list decides, whatever the score."""
    blocked = match["list"] == "block"
    note = html.escape(str(match.get("note") or ""))[:200]
    return (
        f'<div class="verdict {"verdict-nsfw" if blocked else "verdict-normal"}"><strong>'
        f"{'Blocked' if blocked else 'Allowed'}: a known image</strong> on this desk's {match['list']} list "
        f"(hash distance {int(match['distance'])}){': ' + note if note else ''}."
        f"{' The preview stays blurred.' if blocked else ''}</div>"
    )


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
