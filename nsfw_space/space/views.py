"""The page's own events (not part of the API): the verdict from the bars already shown, the URL
box, the batch table with its CSV and thumbnails, and the GIF/video plot."""

from __future__ import annotations

import json
import uuid
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from nsfw_space.bulk.writers import write_batch_csv
from nsfw_space.desk.lists import with_match
from nsfw_space.model.policy import Policy, calibrate
from nsfw_space.model.prediction import Prediction
from nsfw_space.space.arguments import optional_text, redaction_arguments, threshold_value
from nsfw_space.space.batch_inputs import opened
from nsfw_space.space.calibration import Labelled, as_frames, curves, histogram, summary_markdown, zip_members
from nsfw_space.space.handlers import Handlers
from nsfw_space.space.messages import output_folder, shown_as_desk_error, shown_as_error
from nsfw_space.space.payloads import display_name
from nsfw_space.space.render import known_image_html, label_scores, thumbnail, verdict_html, verdict_word


class PageViews(Handlers):
    """The API handlers plus the page-only views built on them."""

    def verdict_from_label(
        self,
        label: Any,
        threshold: float | None,
        session_policy: dict[str, Any] | None = None,
        match: dict[str, Any] | None = None,
    ) -> tuple[str, Any]:
        """Recompute the verdict from the bars already shown (no model call); a known image's
        ``match`` (found once, when the image arrived) still decides."""
        limit = self.applied(threshold, session_policy)
        scores = label_scores(label)
        if not scores:
            return verdict_html(None, limit.block), None
        prediction = self.classifier.prediction_from_scores(scores)
        details = prediction.to_dict(limit.block, limit.review)
        if self.desk is not None:
            with_match(details, match)
        return _known_or(details, verdict_html(prediction, limit.block, review=limit.review)), details

    def desk_check(
        self, image: Any, label: Any, threshold: float | None, session_policy: dict[str, Any] | None = None
    ) -> tuple[str, Any, dict[str, Any] | None]:
        """With the desk on, once per image on the page: the lists' match and, for a ``review``
        decision, the queued item (its review_id in the details)."""
        verdict, details = self.verdict_from_label(label, threshold, session_policy)
        if details is None or image is None:
            return verdict, details, None
        judged = self._judged(self._source(image), details)
        return _known_or(judged, verdict), judged, judged["match"]

    def url_view(
        self, url: str, threshold: float | None, session_policy: dict[str, Any] | None = None
    ) -> tuple[dict[str, float], str, dict[str, Any], dict[str, Any] | None]:
        """The image tab's URL box: bars, verdict, JSON (and the desk's match) for the image at ``url``."""
        limit = self.applied(threshold, session_policy)
        url = optional_text(url, "url")
        if not url:
            raise gr.Error("Type or paste an image URL first.", print_exception=False)
        source = self._fetch(url)
        prediction = self._run(source)
        details = self._judged(source, prediction.to_dict(limit.block, limit.review))
        verdict = _known_or(details, verdict_html(prediction, limit.block, review=limit.review))
        return prediction.scores, verdict, details, details.get("match")

    def batch_view(
        self,
        files: Any,
        threshold: float | None,
        urls: str | None,
        session_policy: dict[str, Any] | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's idiom for a progress bar
    ) -> tuple[list[list[Any]], str, list[tuple[Image.Image, str]], list[str | None], Any]:
        """The batch tab: a results table, the table as CSV, thumbnails (flagged ones blurred), each
        row's file (kept in the session, so a selected row can be explained) and the row
        explanation hidden again."""
        limit = self.applied(threshold, session_policy)
        named = self._batch_sources(files, urls)  # fetched once: rows and thumbnails share it
        rows = self._moderate_named(named, limit, progress)
        table = [
            [
                row["file"],
                row["label"] or "",
                "" if row["nsfw_score"] is None else f"{row['nsfw_score']:.3f}",
                verdict_word(row),
            ]
            for row in rows
        ]
        csv_path = str(write_batch_csv(rows, self.classifier.labels, output_folder()))
        gallery = []
        for (_, source), row in zip(named, rows, strict=True):
            if row["error"]:
                continue
            gallery.append(
                (thumbnail(source, blur=row["decision"] != "allow"), f"{row['file']}: {verdict_word(row)}")
            )
        return table, csv_path, gallery, kept_files(named), gr.update(visible=False)

    # --- explanations ---------------------------------------------------------------------------
    def explain_view(
        self,
        image: Any,
        url: str | None,
        wanted: bool,
        level: float,
        strength: float,
    ) -> tuple[Any, str | None, str, Any]:
        """The image tab's Explain switch: the heat over a blurred preview, the share a redacted
        copy blurs, and its download; hidden when the switch is off or there is no image."""
        hidden = (gr.update(visible=False), None, "", gr.update(value=None))
        if not wanted:
            return hidden
        source = self._given_image(image, url, required=False)
        if source is None:
            return hidden
        return self._explained_panel(source, level, strength)

    def explain_row(
        self,
        sources: list[str | None] | None,
        level: float,
        strength: float,
        selected: gr.SelectData,
    ) -> tuple[Any, str | None, str, Any]:
        """The batch tab: the explanation of the row the user selected."""
        index = selected.index[0] if isinstance(selected.index, (list, tuple)) else selected.index
        rows = sources or []
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise gr.Error("Select a row of the results first.", print_exception=False)
        if rows[index] is None:
            raise gr.Error(
                "This row's file could not be read, so there is nothing to explain.", print_exception=False
            )
        return self._explained_panel(rows[index], level, strength)

    def _explained_panel(
        self, source: str | bytes, level: float, strength: float
    ) -> tuple[Any, str | None, str, Any]:
        heat_level, radius = redaction_arguments(level, strength)
        explanation = self._explained(source)
        overlay, redacted = self.explanation_files(explanation, source, heat_level, radius)
        note = (
            f"**Redacted copy: {explanation.share(heat_level):.0%} of the image blurred** (heat at least "
            f"{heat_level:.2f}, nsfw score {explanation.prediction.nsfw_score:.2f})."
        )
        return gr.update(visible=True), overlay, note, gr.update(value=redacted)

    def frames_view(
        self,
        media: Any,
        threshold: float | None,
        rule: str,
        k: float,
        frames: float,
        session_policy: dict[str, Any] | None = None,
    ) -> tuple[str, Any, dict[str, Any]]:
        """The GIF/video tab: verdict, the nsfw score over time with the threshold(s) and the
        flagged segments (a band along the top of the plot over each), and the JSON."""
        import pandas as pd

        result = self._frames(media, self.applied(threshold, session_policy), rule, k, frames)
        limit, review = result["threshold"], result["review_threshold"]
        times, scores = result["frame_times"], result["frame_scores"]
        columns: dict[str, list] = {
            "time (s)": [*times, times[0], times[-1]],
            "nsfw score": [*scores, limit, limit],
            "series": ["nsfw score"] * len(scores) + ["threshold"] * 2,
        }
        lines = [("review threshold", [(times[0], review), (times[-1], review)])] if review < limit else []
        for number, segment in enumerate(result["segments"], start=1):
            lines.append((f"flagged {number}", [(segment["start"], 1.0), (segment["end"], 1.0)]))
        for name, points in lines:
            for time, value in points:
                columns["time (s)"].append(time)
                columns["nsfw score"].append(value)
                columns["series"].append(name)
        plot = pd.DataFrame(columns)
        prediction = Prediction(scores=result["scores"], nsfw_score=result["nsfw_score"])
        verdict = verdict_html(prediction, limit, rule=rule, k=result["k"], review=review)
        return verdict, plot, result

    # --- the Calibrate tab ---------------------------------------------------------------------
    def calibration_scores(
        self,
        normal: Any,
        nsfw: Any,
        archive: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's idiom for a progress bar
    ) -> tuple[dict[str, Any], str]:
        """Score the labelled uploads; returns this session's scores and a status line."""
        labelled = [
            Labelled(display_name(item), opened(self._source_or_error, item), is_nsfw)
            for files, is_nsfw in ((normal, False), (nsfw, True))
            for item in (files if isinstance(files, (list, tuple)) else [])
        ]
        limit = self.settings.max_calibration_files
        if archive is not None:
            with shown_as_error("This zip can't be used"):
                nsfw_names = {self.classifier.labels[i].lower() for i in self.classifier.nsfw_indices}
                normal_names = {label.lower() for label in self.classifier.labels} - nsfw_names
                labelled += zip_members(
                    self._source_or_error(archive),
                    nsfw_names,
                    normal_names,
                    max_files=limit,
                    max_bytes=self.settings.max_file_bytes,
                )
        if len(labelled) > limit:
            raise gr.Error(
                f"{len(labelled)} images were given; at most {limit} are scored at once.",
                print_exception=False,
            )
        return self._labelled_scores(labelled, progress)

    def desk_calibration_scores(
        self,
        token: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's idiom for a progress bar
        profile: gr.OAuthProfile | None = None,
        hub_token: gr.OAuthToken | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Score the desk's decided items (block: nsfw, allow: normal), for its moderators only."""
        from nsfw_space.space.review import ReviewViews

        if self.desk is None:
            raise gr.Error("This Space has no moderation desk.", print_exception=False)
        with shown_as_desk_error():
            ReviewViews(self.desk).moderator(token, profile, hub_token)
            decided = self.desk.queue.decided_items()
        labelled = [
            Labelled(f"desk {item_id}", image, decision == "block") for item_id, decision, _, image in decided
        ]
        state, line = self._labelled_scores(labelled[-self.settings.max_calibration_files :], progress)
        return state, f"{line} (the desk's decisions)"

    def _labelled_scores(self, labelled: list[Labelled], progress: Any) -> tuple[dict[str, Any], str]:
        kinds = {item.is_nsfw for item in labelled}
        if kinds != {True, False}:
            raise gr.Error(
                "Calibration needs labelled images of both kinds: add normal and nsfw images "
                "(or a zip with a normal/ and an nsfw/ folder; on the desk, both blocked and allowed items).",
                print_exception=False,
            )
        outcomes = self._score_all([item.source for item in labelled], progress)
        scored = [
            (outcome.nsfw_score, item.is_nsfw)
            for item, outcome in zip(labelled, outcomes, strict=True)
            if isinstance(outcome, Prediction)
        ]
        unreadable = len(labelled) - len(scored)
        if {is_nsfw for _, is_nsfw in scored} != {True, False}:
            raise gr.Error("Too few of the images could be read to have both kinds.", print_exception=False)
        state = {
            "scores": [s for s, _ in scored],
            "is_nsfw": [n for _, n in scored],
            "unreadable": unreadable,
        }
        return state, f"{len(scored)} images scored" + (f", {unreadable} unreadable" if unreadable else "")

    def calibration_view(
        self, state: dict[str, Any] | None, block_precision: float, review_recall: float
    ) -> tuple[Any, Any, Any, str, str | None, dict[str, Any] | None]:
        """Curves, histogram, the chosen thresholds with their counts and warnings, and the policy
        file for this session's scores at the chosen targets."""
        if not state:
            empty = as_frames({})
            return empty, empty, empty, "", None, None
        targets = [
            threshold_value(value, default)
            for value, default in ((block_precision, 0.99), (review_recall, 0.95))
        ]
        if not all(0 < value < 1 for value in targets):
            raise gr.Error("The targets must be between 0 and 1.", print_exception=False)
        scores, truth = np.asarray(state["scores"]), np.asarray(state["is_nsfw"], dtype=bool)
        result = calibrate(
            scores, truth, block_precision=targets[0], review_recall=targets[1], model=self.classifier.name
        )
        roc, by_threshold = curves(scores, truth)
        folder = output_folder()
        folder.mkdir(parents=True, exist_ok=True)
        path = result.policy.save(folder / f"policy-{uuid.uuid4().hex[:12]}.json")
        summary = summary_markdown(result, len(scores), state.get("unreadable", 0))
        frames = as_frames(roc), as_frames(by_threshold), as_frames(histogram(scores, truth))
        return *frames, summary, str(path), json.loads(result.policy.to_json())

    def use_policy(self, candidate: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Any, str]:
        """Apply the calibrated policy to this browser session's page: its state, the threshold
        slider at the block threshold, and a line saying so."""
        if not candidate:
            raise gr.Error("Score labelled images first; then a policy can be used.", print_exception=False)
        policy = Policy.from_dict(candidate)
        note = (
            f"This page now blocks at {policy.block:.4f} and sends scores from {policy.review:.4f} to "
            "review, for this browser session only; other users keep the Space's own policy."
        )
        return candidate, gr.update(value=round(policy.block, 4)), note


def _known_or(details: dict[str, Any], verdict: str) -> str:
    """The known-image verdict when the desk matched ``details``, else ``verdict``."""
    match = details.get("match")
    return known_image_html(match) if match else verdict


def kept_files(named: list[tuple[str, str | bytes | Any]]) -> list[str | None]:
    """Each batch row's file as a path (a URL's bytes are saved beside the CSV, deleted with the
    uploads); None for a row whose file could not be read."""
    kept: list[str | None] = []
    for _, source in named:
        if isinstance(source, str):
            kept.append(source)
        elif isinstance(source, bytes):
            folder = output_folder()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"fetched-{uuid.uuid4().hex[:12]}"
            path.write_bytes(source)
            kept.append(str(path))
        else:
            kept.append(None)
    return kept
