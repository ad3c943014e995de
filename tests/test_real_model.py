"""Opt-in: the real Falconsai weights from the Hub. Run with NSFW_SPACE_REAL_MODEL=1 and network access."""

from __future__ import annotations

import os

import pytest

from nsfw_space import DEFAULT_MODEL, NSFWClassifier
from nsfw_space.space.demo import example_paths

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        os.environ.get("NSFW_SPACE_REAL_MODEL") != "1",
        reason="opt-in: set NSFW_SPACE_REAL_MODEL=1 (needs the Hugging Face Hub)",
    ),
]


@pytest.fixture(scope="module")
def real_classifier():
    previous = os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.pop("TRANSFORMERS_OFFLINE", None)
    try:
        yield NSFWClassifier.from_pretrained(DEFAULT_MODEL, precision="fp32")
    finally:
        if previous is not None:
            os.environ["HF_HUB_OFFLINE"] = previous


def test_real_model_has_the_cards_labels(real_classifier):
    assert real_classifier.labels == ["normal", "nsfw"]


def test_examples_come_out_normal(real_classifier):
    paths = example_paths()
    assert paths, "examples/ is empty"
    for path in paths:
        prediction = real_classifier.predict(path)
        assert prediction.label == "normal", (path.name, prediction.scores)
        assert prediction.nsfw_score < 0.5
