"""The named API: /classify, /moderate, /moderate_batch, /moderate_frames, /explain.

Each handler is a pure function of its inputs and the (read-only) classifier; its docstring is the
endpoint's description in view_api and the MCP tool's. Page-only events live in views.py.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

import gradio as gr

from nsfw_space.config import Settings
from nsfw_space.desk.desk import Desk
from nsfw_space.errors import ExplainError, InvalidImageError
from nsfw_space.media.budgets import PixelBudget
from nsfw_space.media.fetch import fetch_image_bytes
from nsfw_space.model.classifier import NSFWClassifier
from nsfw_space.model.device import gpu_task, on_zero_gpu
from nsfw_space.model.explain import DEFAULT_LEVEL, Explanation
from nsfw_space.model.policy import Policy
from nsfw_space.model.prediction import Prediction
from nsfw_space.model.rules import RULES
from nsfw_space.space.arguments import (
    DEFAULT_K,
    MAX_SAMPLED_FRAMES,
    optional_text,
    redaction_arguments,
    threshold_value,
    whole_number,
)
from nsfw_space.space.batch_inputs import batch_sources
from nsfw_space.space.batching import DynamicBatcher
from nsfw_space.space.messages import (
    DESK_DOWN,
    FILE_REFUSED,
    is_jpeg,
    output_folder,
    shown_as_desk_error,
    shown_as_error,
)
from nsfw_space.space.payloads import payload_source

logger = logging.getLogger(__name__)


class Handlers:
    """The event handlers; each is a pure function of its inputs and the (read-only) classifier."""

    def __init__(
        self,
        classifier: NSFWClassifier,
        settings: Settings,
        policy: Policy | None = None,
        desk: Desk | None = None,
    ) -> None:
        self.classifier = classifier
        self.desk = desk
        self.policy = policy or Policy.single(settings.threshold)
        self.settings = replace(settings, threshold=self.policy.block)
        self._explain = classifier.explain
        if on_zero_gpu():  # the GPU exists only inside the request's own spaces.GPU call
            self._predict = gpu_task(classifier.predict)
            self._score_all = gpu_task(self._score_sources)
            self._explain = gpu_task(classifier.explain)
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
            label, scores (every label's probability), nsfw_score, is_nsfw, threshold, decision
            (allow, review or block) and review_threshold; with the moderation desk on, also match
            (null, or the known-image list that decided, its hash distance and note) and review_id
            when the image was queued for review.
        """
        limit = self.applied(threshold)
        source = self._given_image(image, url)
        return self._judged(source, self._run(source).to_dict(limit.block, limit.review))

    def moderate_batch(
        self, files: Any = None, threshold: float | None = None, urls: str | None = None, progress: Any = None
    ) -> list[dict[str, Any]]:
        """Moderate many images, GIFs or videos (uploads and/or http/https URLs) at once.

        Args:
            files: the files to check (uploads or data: URLs); may be empty when urls are given.
            threshold: flag a file when its nsfw score is at least this (0 to 1; default 0.5).
            urls: image URLs, one per line.
        Returns:
            one entry per file, in order: file, label, scores, nsfw_score, is_nsfw, threshold, decision,
            review_threshold, error (and match, review_id with the moderation desk on).
        """
        limit = self.applied(threshold)
        return self._moderate_named(self._batch_sources(files, urls), limit, progress)

    def _moderate_named(
        self, named: list[tuple[str, str | bytes | InvalidImageError]], limit: Policy, progress: Any
    ) -> list[dict[str, Any]]:
        outcomes = self._score_all([source for _, source in named], progress)
        rows = []
        for (name, source), outcome in zip(named, outcomes, strict=True):
            if isinstance(outcome, Prediction):
                judged = self._judged(source, outcome.to_dict(limit.block, limit.review))
                rows.append({"file": name, **judged, "error": ""})
            else:
                rows.append(
                    {
                        "file": name,
                        "label": None,
                        "scores": None,
                        "nsfw_score": None,
                        "is_nsfw": None,
                        "threshold": limit.block,
                        "decision": None,
                        "review_threshold": limit.review,
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
            label, scores, nsfw_score, is_nsfw, threshold, decision, review_threshold, rule, k (as
            applied), frame_scores, frame_times and segments (time ranges, in seconds, whose frames
            score at or above the review threshold, with their peak score); with the moderation desk
            on, also match (any sampled frame's) and review_id.
        """
        return self._frames(media, self.applied(threshold), rule, k, frames)

    def _frames(self, media: Any, limit: Policy, rule: str, k: Any, frames: Any) -> dict[str, Any]:
        if media is None:
            raise gr.Error("No file was given. Upload a GIF or a video.", print_exception=False)
        if not isinstance(rule, str) or rule not in RULES:
            raise gr.Error(f"The rule must be one of {', '.join(RULES)}.", print_exception=False)
        count = whole_number(frames, "frames", 1, MAX_SAMPLED_FRAMES, default=self.settings.frames)
        at_least = whole_number(k, "k", 1, MAX_SAMPLED_FRAMES, default=DEFAULT_K)
        view = self.classifier.with_limits(frames=count)
        predict = gpu_task(view.predict) if on_zero_gpu() else view.predict
        source = self._source(media)
        budget = PixelBudget(self.settings.max_request_pixels)
        with shown_as_error(FILE_REFUSED):
            prediction = predict(source, rule=rule, k=at_least, budget=budget)
        result = prediction.to_dict(limit.block, limit.review)
        result.setdefault("frame_scores", [result["nsfw_score"]])
        result.setdefault("frame_times", [0.0])
        if "segments" not in result:  # a still image: one frame, at time 0
            peak = result["nsfw_score"]
            flagged = peak >= limit.review
            result["segments"] = [{"start": 0.0, "end": 0.0, "peak": peak}] if flagged else []
        result.update(rule=rule, k=min(at_least, len(result["frame_scores"])))
        return self._judged(source, result)

    def explain(
        self,
        image: Any = None,
        threshold: float | None = None,
        level: float | None = DEFAULT_LEVEL,
        strength: float | None = None,
        url: str | None = None,
    ) -> tuple[str, str, dict[str, Any]]:
        """Explain one image's score: where the evidence for the NSFW label is, and a copy with only those regions blurred.

        Args:
            image: the image to explain (JPEG, PNG, WebP, GIF, BMP, TIFF or ICO), as an upload or a data: URL; leave empty when url is given.
            threshold: flag the image when its nsfw score is at least this (0 to 1; default 0.5).
            level: blur the regions whose heat is at least this (0 to 1, relative to the image's hottest region; default 0.5).
            strength: the blur's radius in pixels (up to 500; 0 or empty: 4% of the image's longer side).
            url: an http(s) URL of an image, used when no image is uploaded.
        Returns:
            the heat map in colour over a blurred preview (PNG, with its colour scale), the redacted
            copy (the image's own size; the hot regions blurred, every other pixel unchanged), and
            JSON: /moderate's fields plus method, grid (heat per patch of the model's grid, rows of
            numbers from 0 to 1), level, redacted_share (the share of the image blurred).
        """
        limit = self.applied(threshold)
        heat_level, radius = redaction_arguments(level, strength)
        source = self._given_image(image, url)
        explanation = self._explained(source)
        overlay, redacted = self.explanation_files(explanation, source, heat_level, radius)
        return overlay, redacted, explanation.to_dict(limit.block, limit.review, heat_level)

    def _explained(self, source: str | bytes) -> Explanation:
        with shown_as_error(FILE_REFUSED):
            try:
                return self._explain(source, budget=PixelBudget(self.settings.max_request_pixels))
            except ExplainError as err:
                raise gr.Error(str(err), title="No explanation", print_exception=False) from None

    def explanation_files(
        self, explanation: Explanation, source: str | bytes, level: float, strength: float | None
    ) -> tuple[str, str]:
        """The overlay (PNG) and the redacted copy (JPEG for a JPEG, else PNG) saved where Gradio
        keeps uploads, deleted with them; returns their paths."""
        folder = output_folder()
        folder.mkdir(parents=True, exist_ok=True)
        stem = uuid.uuid4().hex[:12]
        overlay = folder / f"heat-{stem}.png"
        explanation.overlay().save(overlay)
        redacted = explanation.redact(level=level, strength=strength)
        if is_jpeg(source):
            path = folder / f"redacted-{stem}.jpg"
            redacted.convert("RGB").save(path, quality=95)
        else:
            path = folder / f"redacted-{stem}.png"
            redacted.save(path)
        return str(overlay), str(path)

    # --- helpers ---------------------------------------------------------------------------------
    def _judged(self, source: Any, result: dict[str, Any]) -> dict[str, Any]:
        """With the desk on: ``match`` (a known image decides), and ``review_id`` when queued."""
        if self.desk is None:
            return result
        with shown_as_desk_error(DESK_DOWN):
            return self.desk.judge(source, result)

    def _given_image(self, image: Any, url: Any, required: bool = True) -> str | bytes | None:
        """The uploaded image, else the image at ``url``; with neither, one sentence (or None when
        not ``required``)."""
        url = optional_text(url, "url")
        if image is not None:
            return self._source(image)
        if url:
            return self._fetch(url)
        if required:
            raise gr.Error("No image was given. Upload an image or give its URL.", print_exception=False)
        return None

    def applied(self, threshold: Any, session_policy: dict[str, Any] | None = None) -> Policy:
        """The policy for one request: the page session's own (chosen in the Calibrate tab), else
        the Space's; the caller's threshold (checked) as its block threshold."""
        base = Policy.from_dict(session_policy) if session_policy else self.policy
        return base.at(threshold_value(threshold, base.block))

    def _run(self, source: str | bytes) -> Prediction:
        with shown_as_error(FILE_REFUSED):
            return self._predict(source, budget=PixelBudget(self.settings.max_request_pixels))

    def _source(self, payload: Any) -> str | bytes:
        """A caller's file payload -> a received file's path or bytes (see :mod:`.payloads`)."""
        with shown_as_error(FILE_REFUSED):
            return self._source_or_error(payload)

    def _source_or_error(self, payload: Any) -> str | bytes:
        # the fetcher itself refuses when URLs are off: one sentence for that, wherever the URL came
        return payload_source(payload, max_bytes=self.settings.max_file_bytes, fetch=self._fetch_or_error)

    def _fetch(self, url: str) -> bytes:
        with shown_as_error("This URL can't be checked"):
            return self._fetch_or_error(url)

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
        return batch_sources(files, urls, self.settings, self._source_or_error, self._fetch_or_error)

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
