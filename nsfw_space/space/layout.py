"""The page's components, one function per part; no events are wired here (see demo.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from nsfw_space.config import DEFAULT_HEAT_LEVEL, Settings
from nsfw_space.modes import FrameRule
from nsfw_space.space.arguments import DEFAULT_K, MAX_SAMPLED_FRAMES
from nsfw_space.space.render import verdict_html

RULE_CHOICES = [
    ("worst frame (max)", FrameRule.MAX.value),
    ("average (mean)", FrameRule.MEAN.value),
    ("at least k frames", FrameRule.K_OF_N.value),
]
VIDEO_SUFFIXES = [".gif", ".webp", ".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"]


@dataclass
class ExplainPanel:
    """Where the model looked: the heat over a blurred preview, a line on the redacted copy, its
    download; hidden until there is an explanation."""

    column: gr.Column
    overlay: gr.Image
    note: gr.Markdown
    download: gr.DownloadButton


@dataclass
class ExplainSettings:
    level: gr.Slider
    strength: gr.Slider


@dataclass
class ImageTab:
    image: gr.Image
    url: gr.Textbox
    url_button: gr.Button
    verdict: gr.HTML
    label: gr.Label
    details: gr.JSON
    explain: gr.Checkbox
    panel: ExplainPanel
    api_redacted: gr.Image  # the /explain API's outputs: the redacted copy and the JSON
    api_result: gr.JSON


@dataclass
class BatchTab:
    files: gr.File
    urls: gr.Textbox
    button: gr.Button
    table: gr.Dataframe
    csv: gr.File
    gallery: gr.Gallery
    results: gr.JSON
    sources: gr.State  # each row's file, so a selected row can be explained
    panel: ExplainPanel


@dataclass
class VideoTab:
    media: gr.File
    rule: gr.Radio
    k: gr.Number
    frames: gr.Number
    button: gr.Button
    verdict: gr.HTML
    plot: gr.LinePlot
    results: gr.JSON


@dataclass
class CalibrateTab:
    normal: gr.File
    nsfw: gr.File
    archive: gr.File
    button: gr.Button
    block_precision: gr.Slider
    review_recall: gr.Slider
    summary: gr.Markdown
    roc: gr.LinePlot
    by_threshold: gr.LinePlot
    histogram: gr.BarPlot
    policy_file: gr.File
    use: gr.Button
    status: gr.Markdown
    scores: gr.State  # this session's labelled scores
    candidate: gr.State  # the policy the targets give on them
    from_desk: gr.Button  # the desk's decided items instead (moderators; shown only with a desk)


@dataclass
class Page:
    """Everything the events are wired to: the shared threshold, the tabs, the policy this
    session chose in the Calibrate tab (None: the Space's own), and the image's list match."""

    threshold: gr.Slider
    explain: ExplainSettings
    image: ImageTab
    batch: BatchTab
    video: VideoTab
    calibrate: CalibrateTab
    session_policy: gr.State
    match: gr.State  # the desk's known-image match for the image shown (None: none, or no desk)
    desk_token: gr.Textbox | None = None  # the Review tab's session token (None: no desk)


def threshold_controls(settings: Settings) -> gr.Slider:
    """The threshold every view shares, and the reveal switch for flagged previews."""
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
    return threshold


def explain_settings() -> ExplainSettings:
    """How an explanation's redacted copy is made; shared by the image and batch tabs."""
    with gr.Accordion("Explanations: redaction settings", open=False, elem_id="explain-settings"), gr.Row():
        level = gr.Slider(
            0.0,
            1.0,
            value=DEFAULT_HEAT_LEVEL,
            step=0.05,
            label="Blur the regions whose heat is at least",
            elem_id="explain-level",
        )
        strength = gr.Slider(
            0,
            100,
            value=0,
            step=1,
            label="Blur strength: radius in pixels (0: 4% of the image's longer side)",
            elem_id="explain-strength",
        )
    return ExplainSettings(level, strength)


def explain_panel(prefix: str) -> ExplainPanel:
    """The heat map, its reading, the share blurred and the redacted copy's download (hidden
    until there is an explanation)."""
    from nsfw_space.model.explain import HOW_TO_READ

    with gr.Column(visible=False, elem_id=f"{prefix}-panel") as column:
        overlay = gr.Image(
            label="Where the model looked (over a blurred preview)",
            type="filepath",
            interactive=False,
            elem_id=f"{prefix}-overlay",
            height=360,
        )
        gr.Markdown(HOW_TO_READ, elem_classes=["explain-how"])
        note = gr.Markdown(elem_id=f"{prefix}-note")
        download = gr.DownloadButton("Download a redacted copy", elem_id=f"{prefix}-download")
    return ExplainPanel(column, overlay, note, download)


def image_tab(settings: Settings, bar_count: int) -> ImageTab:
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
            label = gr.Label(num_top_classes=bar_count, label="Label probabilities", elem_id="label-bars")
            explain = gr.Checkbox(
                label="Explain: show where the model looked, and offer a redacted copy",
                value=False,
                elem_id="explain",
            )
            panel = explain_panel("explain")
            with gr.Accordion("Moderation result (JSON, as the /moderate API returns it)", open=False):
                details = gr.JSON(label="Result", elem_id="details")
            api_redacted = gr.Image(type="filepath", visible=False, label="redacted copy")
            api_result = gr.JSON(visible=False, label="explanation")
    return ImageTab(image, url, url_button, verdict, label, details, explain, panel, api_redacted, api_result)


def batch_tab(settings: Settings) -> BatchTab:
    with gr.Tab("Batch", id="batch-tab"):
        with gr.Row(equal_height=False):
            files = gr.File(
                file_count="multiple",
                label=f"Images, GIFs or videos (up to {settings.max_batch_files})",
                elem_id="batch-files",
            )
            urls = gr.Textbox(label="…and/or image URLs, one per line", lines=5, elem_id="batch-urls")
        button = gr.Button("Check all", variant="primary", elem_id="batch-button")
        table = gr.Dataframe(
            headers=["file", "label", "nsfw score", "verdict"],
            label="Results",
            interactive=False,
            wrap=True,
            elem_id="batch-table",
        )
        csv = gr.File(label="Results as CSV", elem_id="batch-csv")
        gallery = gr.Gallery(
            label="Thumbnails (flagged ones blurred)", columns=6, height="auto", elem_id="batch-gallery"
        )
        gr.Markdown("Select a row of the results to see where the model looked in that file.")
        panel = explain_panel("batch-explain")
        results = gr.JSON(visible=False, label="results")
    return BatchTab(files, urls, button, table, csv, gallery, results, gr.State([]), panel)


def video_tab(settings: Settings) -> VideoTab:
    with gr.Tab("GIF / video", id="video-tab"), gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            media = gr.File(
                label="Animated GIF/WebP or a short video (mp4, webm, mov)",
                file_types=VIDEO_SUFFIXES,
                elem_id="media-file",
            )
            rule = gr.Radio(
                RULE_CHOICES, value=FrameRule.MAX.value, label="Sum the frames up by", elem_id="frame-rule"
            )
            with gr.Row():
                k = gr.Number(value=DEFAULT_K, minimum=1, precision=0, label="k", elem_id="min-frames")
                frames = gr.Number(
                    value=settings.frames,
                    minimum=1,
                    maximum=MAX_SAMPLED_FRAMES,
                    precision=0,
                    step=1,
                    label=f"frames sampled (1 to {MAX_SAMPLED_FRAMES})",
                    elem_id="frame-count",
                )
            button = gr.Button("Check frames", variant="primary", elem_id="media-button")
        with gr.Column(scale=1, min_width=300):
            verdict = gr.HTML(verdict_html(None, settings.threshold), elem_id="media-verdict")
            plot = gr.LinePlot(
                x="time (s)",
                y="nsfw score",
                color="series",
                y_lim=[0, 1],
                label="nsfw score over time",
                elem_id="media-plot",
            )
            results = gr.JSON(label="Result", elem_id="media-json")
    return VideoTab(media, rule, k, frames, button, verdict, plot, results)


def private_tab() -> gr.HTML:
    """The On this device tab: the page under /private/ (web/page/), which reads and scores the
    image itself, so no Gradio input (which would upload it) is ever involved."""
    frame = (Path(__file__).resolve().parent / "assets" / "private_tab.html").read_text(encoding="utf-8")
    with gr.Tab("On this device", id="private-tab"):
        return gr.HTML(frame, elem_id="private-tab-frame")


def calibrate_tab(settings: Settings, desk: bool = False) -> CalibrateTab:
    with gr.Tab("Calibrate", id="calibrate-tab"):
        gr.Markdown(
            "Choose the thresholds on **your own labelled images**: drop them in the two boxes (or a "
            "zip with a `normal/` and an `nsfw/` folder), pick the targets, and download the policy. "
            "**Block** acts without a person; **review** sends the middle to one. A policy made on "
            "images unlike yours is not a policy. The images are deleted like every upload."
        )
        with gr.Row(equal_height=False):
            normal = gr.File(file_count="multiple", label="normal images", elem_id="calibrate-normal")
            nsfw = gr.File(file_count="multiple", label="nsfw images", elem_id="calibrate-nsfw")
            archive = gr.File(
                file_types=[".zip"], label="…or one zip, a folder per label", elem_id="calibrate-zip"
            )
        with gr.Row():
            button = gr.Button("Score them", variant="primary", elem_id="calibrate-button")
            from_desk = gr.Button(
                "…or the desk's decided items (moderators, signed in on the Review tab)",
                visible=desk,
                elem_id="calibrate-from-desk",
            )
        with gr.Row():
            block_precision = gr.Slider(
                0.5,
                0.999,
                value=0.99,
                step=0.001,
                label="Block at precision at least",
                elem_id="block-precision",
            )
            review_recall = gr.Slider(
                0.5,
                0.999,
                value=0.95,
                step=0.001,
                label="Review from recall at least",
                elem_id="review-recall",
            )
        summary = gr.Markdown(elem_id="calibrate-summary")
        with gr.Row(equal_height=False):
            roc = gr.LinePlot(
                x="false positive rate", y="true positive rate", title="ROC", elem_id="calibrate-roc"
            )
            by_threshold = gr.LinePlot(
                x="threshold",
                y="value",
                color="measure",
                title="precision and recall by threshold",
                elem_id="calibrate-pr",
            )
            histogram = gr.BarPlot(
                x="score",
                y="images",
                color="label",
                title="scores of each label",
                elem_id="calibrate-histogram",
            )
        with gr.Row():
            policy_file = gr.File(label="policy.json", elem_id="calibrate-policy")
            use = gr.Button("Use this policy on this page (this session only)", elem_id="calibrate-use")
        status = gr.Markdown(elem_id="calibrate-status")
        scores, candidate = gr.State(None), gr.State(None)
    return CalibrateTab(
        normal,
        nsfw,
        archive,
        button,
        block_precision,
        review_recall,
        summary,
        roc,
        by_threshold,
        histogram,
        policy_file,
        use,
        status,
        scores,
        candidate,
        from_desk,
    )
