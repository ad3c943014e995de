"""The Python API: NSFWClassifier, Prediction, and agreement with the model card's snippets."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from nsfw_space import InvalidImageError, ModelLoadError, NSFWClassifier, Prediction
from nsfw_space.tools.synthetic import build_model_dir, varied_image


def card_pipeline_scores(model_dir, path) -> dict[str, float]:
    """The model card's first snippet, as written there (pipeline on a PIL image)."""
    from transformers import pipeline

    img = Image.open(path)
    classifier = pipeline("image-classification", model=str(model_dir))
    return {item["label"]: item["score"] for item in classifier(img)}


def card_direct_label(model_dir, path) -> tuple[str, np.ndarray]:
    """The model card's second snippet ("Load model directly"), plus its probabilities."""
    from transformers import AutoModelForImageClassification, ViTImageProcessor

    img = Image.open(path)
    model = AutoModelForImageClassification.from_pretrained(str(model_dir))
    processor = ViTImageProcessor.from_pretrained(str(model_dir))
    with torch.no_grad():
        inputs = processor(images=img, return_tensors="pt")
        outputs = model(**inputs)
        logits = outputs.logits
    predicted_label = logits.argmax(-1).item()
    return model.config.id2label[predicted_label], torch.softmax(logits, -1)[0].numpy()


def test_predict_returns_scores_keyed_by_the_models_labels(classifier, images):
    prediction = classifier.predict(str(images[0]))
    assert isinstance(prediction, Prediction)
    assert set(prediction.scores) == {"normal", "nsfw"}
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.nsfw_score == pytest.approx(prediction.scores["nsfw"])
    assert prediction.label == max(prediction.scores, key=prediction.scores.get)
    assert prediction.source == str(images[0])


def test_test_model_scores_really_differ_between_images(classifier, images):
    scores = [classifier.predict(path).nsfw_score for path in images]
    assert max(scores) - min(scores) > 0.3, scores
    assert len({round(s, 3) for s in scores}) == len(scores)


def test_scores_agree_with_the_cards_pipeline_snippet(classifier, model_dir, images):
    for path in images:
        ours = classifier.predict(path).scores
        card = card_pipeline_scores(model_dir, path)
        for label in ours:
            assert ours[label] == pytest.approx(card[label], abs=0.01), (path, ours, card)


def test_top_label_and_scores_agree_with_the_cards_direct_snippet(classifier, model_dir, images):
    for path in images:
        label, probs = card_direct_label(model_dir, path)
        prediction = classifier.predict(path)
        assert prediction.label == label
        np.testing.assert_allclose([prediction.scores[n] for n in classifier.labels], probs, atol=0.01)


def test_every_input_type_gives_the_same_scores(classifier, images):
    path = images[1]
    data = path.read_bytes()
    pil = Image.open(path)
    expected = classifier.predict(str(path)).nsfw_score
    for source in (path, data, io.BytesIO(data), pil, np.asarray(pil.convert("RGB"))):
        assert classifier.predict(source).nsfw_score == pytest.approx(expected, abs=1e-6), type(source)


def test_predict_batch_matches_predict_in_order(classifier, images):
    sources = [str(p) for p in images] * 3
    batch = classifier.predict_batch(sources, batch_size=4)
    assert [p.source for p in batch] == sources
    for path, prediction in zip(sources, batch, strict=True):
        assert prediction.nsfw_score == pytest.approx(classifier.predict(path).nsfw_score, abs=1e-5)


def test_predict_batch_names_the_unreadable_file(classifier, images, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(InvalidImageError, match=r"notes\.jpg"):
        classifier.predict_batch([images[0], bad])
    outcomes = list(classifier.iter_predictions([images[0], bad, images[1]], batch_size=2))
    assert isinstance(outcomes[0][1], Prediction)
    assert isinstance(outcomes[1][1], InvalidImageError)
    assert isinstance(outcomes[2][1], Prediction)


def test_prediction_to_dict_applies_the_threshold(classifier, images):
    prediction = classifier.predict(images[0])
    low = prediction.to_dict(threshold=0.0)
    high = prediction.to_dict(threshold=1.0)
    assert low["is_nsfw"] is True and low["threshold"] == 0.0
    assert high["is_nsfw"] is (prediction.nsfw_score >= 1.0)
    assert set(low) == {
        "label",
        "scores",
        "nsfw_score",
        "is_nsfw",
        "threshold",
        "decision",
        "review_threshold",
    }
    assert low["decision"] == "block" and high["decision"] == ("block" if high["is_nsfw"] else "allow")


def test_labels_come_from_id2label_not_fixed_indices(tmp_path, images):
    reversed_dir = build_model_dir(tmp_path / "reversed", labels=("nsfw", "normal"))
    clf = NSFWClassifier.from_pretrained(str(reversed_dir), device="cpu", precision="fp32")
    assert clf.labels == ["nsfw", "normal"]
    prediction = clf.predict(images[0])
    assert prediction.nsfw_score == pytest.approx(prediction.scores["nsfw"])


def test_any_label_names_work_with_nsfw_labels_setting(tmp_path, images):
    model = build_model_dir(tmp_path / "three", labels=("drawing", "neutral", "porn"))
    clf = NSFWClassifier.from_pretrained(str(model), precision="fp32")
    assert clf.predict(images[0]).nsfw_score == pytest.approx(clf.predict(images[0]).scores["porn"])
    custom = build_model_dir(tmp_path / "custom", labels=("ok", "flag"))
    with pytest.raises(ModelLoadError, match="NSFW_SPACE_NSFW_LABELS"):
        NSFWClassifier.from_pretrained(str(custom))
    flagged = NSFWClassifier.from_pretrained(str(custom), nsfw_labels=["flag"], precision="fp32")
    assert flagged.predict(images[0]).nsfw_score == pytest.approx(flagged.predict(images[0]).scores["flag"])


def test_bf16_stays_within_001_of_fp32(model_dir, classifier, images):
    bf16 = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    scores = [bf16.predict(path).nsfw_score for path in images]
    for path, score in zip(images, scores, strict=True):
        assert score == pytest.approx(classifier.predict(path).nsfw_score, abs=0.01)
    assert len({round(score, 6) for score in scores}) == len(images)  # not quantised to bf16 steps


def test_animated_gif_is_judged_on_its_frames(classifier, tmp_path):
    frames = [varied_image(seed, (160, 120)) for seed in range(6)]
    singles = [classifier.predict(frame).nsfw_score for frame in frames]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    prediction = classifier.predict(path)
    assert prediction.frame_scores is not None and len(prediction.frame_scores) == 6
    gif_frames = [frame.convert("RGB") for frame in _gif_frames(path)]
    expected = max(classifier.predict(frame).nsfw_score for frame in gif_frames)
    assert prediction.nsfw_score == pytest.approx(expected, abs=1e-5)
    assert max(singles) - min(singles) > 0.05  # the frames really differ


def _gif_frames(path):
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            yield gif.copy()
