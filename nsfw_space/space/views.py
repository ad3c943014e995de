"""The page's own events (not part of the API): the verdict from the bars already shown, the URL
box, the batch table with its CSV and thumbnails, and the GIF/video plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from nsfw_space.bulk.writers import write_batch_csv
from nsfw_space.model.prediction import Prediction
from nsfw_space.space.arguments import optional_text, threshold_value
from nsfw_space.space.handlers import Handlers
from nsfw_space.space.render import label_scores, thumbnail, verdict_html, verdict_word


class PageViews(Handlers):
    """The API handlers plus the page-only views built on them."""

    def verdict_from_label(self, label: Any, threshold: float | None) -> tuple[str, Any]:
        """Recompute the verdict from the bars already shown (no model call)."""
        limit = threshold_value(threshold, self.settings.threshold)
        scores = label_scores(label)
        if not scores:
            return verdict_html(None, limit), None
        prediction = self.classifier.prediction_from_scores(scores)
        return verdict_html(prediction, limit), prediction.to_dict(limit)

    def url_view(self, url: str, threshold: float | None) -> tuple[dict[str, float], str, dict[str, Any]]:
        """The image tab's URL box: bars, verdict and JSON for the image at ``url``."""
        limit = threshold_value(threshold, self.settings.threshold)
        url = optional_text(url, "url")
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
        limit = threshold_value(threshold, self.settings.threshold)
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
        csv_path = str(write_batch_csv(rows, self.classifier.labels, csv_folder()))
        gallery = []
        for (_, source), row in zip(named, rows, strict=True):
            if row["error"]:
                continue
            gallery.append(
                (thumbnail(source, blur=bool(row["is_nsfw"])), f"{row['file']}: {verdict_word(row)}")
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


def csv_folder() -> Path:
    """Where the batch view's CSV files go: Gradio's upload folder, deleted with the uploads."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / "nsfw-space"
