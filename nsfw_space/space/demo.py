"""create_demo(classifier, settings) -> gr.Blocks: the Space's page wired to its named API.

No model is loaded here: the classifier is handed in, so tests can pass a tiny one.
Stable endpoints: ``/classify`` (image -> label dict), ``/moderate`` (image, threshold, url ->
JSON), ``/moderate_batch``, ``/moderate_frames`` and ``/explain`` (see handlers.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware
from starlette.routing import Mount

from nsfw_space.config import Settings
from nsfw_space.desk.desk import Desk
from nsfw_space.media.budgets import start_memory_trimmer
from nsfw_space.media.samples import example_photos
from nsfw_space.model.classifier import NSFWClassifier
from nsfw_space.model.policy import Policy
from nsfw_space.space import layout
from nsfw_space.space.bodylimit import BodyLimit, body_limit_for
from nsfw_space.space.payloads import plain_file_schema
from nsfw_space.space.render import footer_markdown, intro_markdown, verdict_html
from nsfw_space.space.review import on_a_space, review_tab
from nsfw_space.space.sessions import start_session_sweeper
from nsfw_space.space.views import PageViews
from nsfw_space.web.building import BrowserModel
from nsfw_space.web.serve import page_status, private_app

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
HIDDEN = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}


def create_demo(
    classifier: NSFWClassifier,
    settings: Settings | None = None,
    policy: Policy | None = None,
    browser: BrowserModel | None = None,
    desk: Desk | None = None,
) -> gr.Blocks:
    """The whole page: single image, batch, GIF/video and on-device views, examples, and the named
    API. ``policy`` (default: the settings' policy file, else their single threshold) decides block,
    review or allow. ``browser``, the on-device model (see :mod:`nsfw_space.web`), adds the On this
    device tab; its files are served under ``/private/`` (pass the demo to launch_options).
    ``desk`` (see :mod:`nsfw_space.desk`) checks known-image lists on every answer, queues
    ``review`` decisions and adds the moderators' Review tab."""
    settings = settings or Settings()
    policy = policy or (Policy.load(settings.policy) if settings.policy else None)
    classifier = classifier.with_limits(limits=settings.decode_limits, frames=settings.frames)
    if settings.mcp:
        from nsfw_space.space import mcp_compat

        mcp_compat.install()
    start_memory_trimmer()
    views = PageViews(classifier, settings, policy, desk)
    settings = views.settings  # the page starts at the policy's block threshold
    examples = example_paths()

    with gr.Blocks(title="NSFW image moderation", delete_cache=cache_schedule(settings)) as demo:
        gr.Markdown(intro_markdown(classifier))
        threshold = layout.threshold_controls(settings)
        explain = layout.explain_settings()
        with gr.Tabs():
            image = layout.image_tab(settings, len(classifier.labels))
            batch = layout.batch_tab(settings)
            video = layout.video_tab(settings)
            if browser is not None:
                layout.private_tab()
            calibrate = layout.calibrate_tab(settings, desk=desk is not None)
            desk_token = None
            if desk is not None:
                desk_token = review_tab(desk, hub_sign_in=bool(desk.options.hub_moderators) and on_a_space())
        if examples:
            gr.Examples(
                examples=[[str(path)] for path in examples],
                inputs=[image.image],
                label="Examples (safe for work)",
            )
        footer = gr.Markdown(footer_markdown(classifier), elem_id="served-by")
        # read again at each page load: once an int8 package is swapped in, the footer says int8
        demo.load(functools.partial(footer_markdown, classifier), outputs=footer, **HIDDEN)
        page = layout.Page(
            threshold, explain, image, batch, video, calibrate, gr.State(None), gr.State(None), desk_token
        )
        _wire_api(views, page)
        _wire_page(views, page)
    for component in (batch.files, video.media):
        _describe_plainly(component)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    _calm_the_queue(demo)
    start_session_sweeper(demo)  # plain HTTP calls leave a session each (see sessions.py)
    if desk is not None:
        desk.start_purging()  # images past their retention: deleted now, then hourly
    if browser is not None:
        demo.private_app = _private_app(browser, views, classifier)  # type: ignore[attr-defined]
        browser.start()  # found in the cache, or built aside: the page serves meanwhile
    return demo


QUEUE_POLL_S = 0.01


def _calm_the_queue(demo: gr.Blocks) -> None:
    """Gradio's queue looks for work every 1 ms while it has none: about 6 % of a core on an idle
    2-core Space (measured with py-spy and /proc, benchmarks/private_mode.py). Every 10 ms costs a
    new request at most 10 ms and leaves the core to those who need it."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)


def _private_app(browser: BrowserModel, views: PageViews, classifier: NSFWClassifier) -> Any:
    """The /private app: the on-device page, with the Space's thresholds and NSFW labels."""
    thresholds = {"threshold": views.policy.block, "review_threshold": views.policy.review}
    labels = {"nsfw_labels": [classifier.labels[i] for i in classifier.nsfw_indices]}
    return private_app(lambda: page_status(browser, thresholds, labels), browser)


build_demo = create_demo  # the name earlier releases used


def demo_from_settings(settings: Settings) -> gr.Blocks:
    """The Space as app.py and ``nsfw-space serve`` run it: the model the settings name, loaded
    once, and the page around it. Raises ModelLoadError or ConfigError."""
    policy = Policy.load(settings.policy) if settings.policy else None  # a bad file fails first
    classifier = NSFWClassifier.from_settings(settings)
    browser = None
    if settings.private_mode:  # built from the model's own fp32 files, whatever precision serves
        browser = BrowserModel(
            classifier,
            source=(settings.model, settings.revision),
            cache_dir=settings.cache_dir or None,
            runtime_dir=settings.web_runtime or None,
        )
    desk = Desk.from_settings(settings)  # None unless NSFW_SPACE_DESK_DB names a database
    return create_demo(classifier, settings, policy, browser, desk)


def _wire_api(views: PageViews, page: layout.Page) -> None:
    """The named API (stable). Each is a hidden button's click, so the page stays simple while the
    API gets its name; /classify is the image's own change event (see _wire_page)."""
    threshold, image, batch, video = page.threshold, page.image, page.batch, page.video
    for handler, inputs, output, name in (
        (views.moderate, [image.image, threshold, image.url], image.details, "moderate"),
        (views.moderate_batch, [batch.files, threshold, batch.urls], batch.results, "moderate_batch"),
        (
            views.moderate_frames,
            [video.media, threshold, video.rule, video.k, video.frames],
            video.results,
            "moderate_frames",
        ),
    ):
        gr.Button(visible=False).click(
            handler, inputs=inputs, outputs=output, api_name=name, preprocess=False, concurrency_id="model"
        )
    gr.Button(visible=False).click(
        views.explain,
        inputs=[image.image, threshold, page.explain.level, page.explain.strength, image.url],
        outputs=[image.panel.overlay, image.api_redacted, image.api_result],
        api_name="explain",
        preprocess=False,
        concurrency_id="model",
    )


def _wire_page(views: PageViews, page: layout.Page) -> None:
    """The page's own events: bars as soon as an image arrives, the verdict, URL box, batch, video."""
    threshold, image, batch, video = page.threshold, page.image, page.batch, page.video
    session = page.session_policy
    classified = image.image.change(
        lambda value, limit: (verdict_html("pending" if value else None, limit), None, None),
        inputs=[image.image, threshold],
        outputs=[image.verdict, image.details, page.match],
        preprocess=False,
        **HIDDEN,
    ).then(
        views.classify,
        inputs=image.image,
        outputs=image.label,
        api_name="classify",
        preprocess=False,
        concurrency_id="model",
        show_progress="minimal",
    )
    verdict_inputs = {
        "inputs": [image.label, threshold, session, page.match],
        "outputs": [image.verdict, image.details],
    }
    if views.desk is None:
        classified.success(views.verdict_from_label, **verdict_inputs, **HIDDEN)
    else:  # the lists and the queue, once per image; a threshold change then reuses the match
        classified.success(
            views.desk_check,
            inputs=[image.image, image.label, threshold, session],
            outputs=[image.verdict, image.details, page.match],
            preprocess=False,
            **HIDDEN,
        )
    threshold.change(views.verdict_from_label, **verdict_inputs, **HIDDEN)
    classified.failure(
        lambda limit: verdict_html("error", limit), inputs=threshold, outputs=image.verdict, **HIDDEN
    )
    by_url = gr.on(
        [image.url_button.click, image.url.submit],
        views.url_view,
        inputs=[image.url, threshold, session],
        outputs=[image.label, image.verdict, image.details, page.match],
        api_visibility="private",
        concurrency_id="model",
    )
    video.button.click(
        views.frames_view,
        inputs=[video.media, threshold, video.rule, video.k, video.frames, session],
        outputs=[video.verdict, video.plot, video.results],
        api_visibility="private",
        preprocess=False,
        concurrency_id="model",
    )
    batch.button.click(
        views.batch_view,
        inputs=[batch.files, threshold, batch.urls, session],
        outputs=[batch.table, batch.csv, batch.gallery, batch.sources, batch.panel.column],
        api_visibility="private",
        preprocess=False,
        concurrency_id="model",
    )
    _wire_explain(views, page, [classified, by_url])
    _wire_calibrate(views, page)


def _wire_explain(views: PageViews, page: layout.Page, checked: list[Any]) -> None:
    """The Explain switch (again after each new image, level or strength) and a batch row's
    explanation when the row is selected."""
    image, settings = page.image, page.explain
    panel = image.panel
    explain = {
        "fn": views.explain_view,
        "inputs": [image.image, image.url, image.explain, settings.level, settings.strength],
        "outputs": [panel.column, panel.overlay, panel.note, panel.download],
        "api_visibility": "private",
        "preprocess": False,
        "concurrency_id": "model",
    }
    for event in checked:  # a new image (dropped, pasted, captured or from a URL) is explained too
        event.success(**explain)
    gr.on([image.explain.change, settings.level.release, settings.strength.release], **explain)
    row = page.batch.panel
    page.batch.table.select(
        views.explain_row,
        inputs=[page.batch.sources, settings.level, settings.strength],
        outputs=[row.column, row.overlay, row.note, row.download],
        api_visibility="private",
        concurrency_id="model",
    )


def _wire_calibrate(views: PageViews, page: layout.Page) -> None:
    """The Calibrate tab: score the labelled uploads, redraw when a target moves, and apply the
    policy to this browser session's page only (a gr.State, never the Space's settings)."""
    tab = page.calibrate
    redraw = {
        "fn": views.calibration_view,
        "inputs": [tab.scores, tab.block_precision, tab.review_recall],
        "outputs": [tab.roc, tab.by_threshold, tab.histogram, tab.summary, tab.policy_file, tab.candidate],
        "api_visibility": "private",
    }
    tab.button.click(
        views.calibration_scores,
        inputs=[tab.normal, tab.nsfw, tab.archive],
        outputs=[tab.scores, tab.status],
        api_visibility="private",
        preprocess=False,
        concurrency_id="model",
    ).success(**redraw)
    gr.on([tab.block_precision.change, tab.review_recall.change], **redraw)
    if page.desk_token is not None:
        tab.from_desk.click(
            views.desk_calibration_scores,
            inputs=[page.desk_token],
            outputs=[tab.scores, tab.status],
            api_visibility="private",
            concurrency_id="model",
        ).success(**redraw)
    tab.use.click(
        views.use_policy,
        inputs=tab.candidate,
        outputs=[page.session_policy, page.threshold, tab.status],
        api_visibility="private",
    )


def _describe_plainly(component: gr.components.Component) -> None:
    """Let ``view_api`` describe a file input in one sentence, not Gradio's FileData docstring."""
    original = component.api_info

    def api_info() -> dict[str, Any]:
        return plain_file_schema(original())

    component.api_info = api_info  # type: ignore[method-assign]


def launch_options(settings: Settings, demo: gr.Blocks | None = None) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch()``: theme, CSS and JS (files in assets/), favicon,
    upload and body limits, and ``demo``'s on-device page under ``/private/``."""
    options: dict[str, Any] = {
        "css": (ASSETS_DIR / "style.css").read_text(encoding="utf-8"),
        "js": (ASSETS_DIR / "safe_preview.js").read_text(encoding="utf-8"),
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
    private = getattr(demo, "private_app", None)
    if private is not None:
        options["app_kwargs"]["routes"] = [Mount("/private", app=private)]
    favicon = ASSETS_DIR / "favicon.png"
    if favicon.is_file():
        options["favicon_path"] = str(favicon)
    if settings.mcp:
        options["mcp_server"] = True
    return options


def example_paths() -> list[Path]:
    """The safe-for-work example images: the repository's top-level ``examples/`` (the package
    reaches it through ``nsfw_space/examples``, which a wheel ships as package data)."""
    return example_photos()


def cache_schedule(settings: Settings) -> tuple[int, int]:
    """Gradio's ``delete_cache``: check every few minutes, delete uploads older than the setting."""
    age = max(60, settings.cache_minutes * 60)
    return (max(60, age // 2), age)
