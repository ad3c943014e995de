"""The model card's recipe: train on a toy dataset, load the result with the card's snippet, eval it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nsfw_space import NSFWClassifier
from nsfw_space.model.policy import Policy
from nsfw_space.tools.synthetic import PROCESSOR_CONFIG, VIT_TINY
from tests.test_cli import run_cli

# The five Training Stats keys of the model card, as it prints them.
CARD_STATS = (
    "eval_loss",
    "eval_accuracy",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
)


pytestmark = pytest.mark.slow  # trains tiny models and writes plots: seconds each


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Two easily told apart classes (bluish vs reddish noise), train/ and test/, plus a tiny base ViT."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for label, colour in (("normal", (40, 90, 220)), ("nsfw", (220, 60, 40))):
            folder = root / "data" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    (root / "data" / "test" / "nsfw" / "broken.png").write_text("not an image")
    base = ViTModel(ViTConfig(image_size=224, patch_size=16, **VIT_TINY), add_pooling_layer=False)
    base.save_pretrained(root / "base")
    ViTImageProcessorPil(**PROCESSOR_CONFIG).save_pretrained(root / "base")
    return root


@pytest.fixture(scope="module")
def trained(toy):
    result = run_cli(
        "train",
        str(toy / "data"),
        "--base",
        str(toy / "base"),
        "--output-dir",
        str(toy / "model"),
        "--epochs",
        "3",
        "--learning-rate",
        "1e-3",
        "--batch-size",
        "8",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return toy / "model", result


def test_train_writes_a_model_the_card_snippet_loads(trained, toy):
    model_dir, _ = trained
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert not list(model_dir.glob("*.bin"))
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "normal", "1": "nsfw"}
    from transformers import pipeline  # the card's first snippet, as written there

    classifier = pipeline("image-classification", model=str(model_dir))
    right = 0
    for label in ("normal", "nsfw"):
        for path in sorted((toy / "data" / "test" / label).glob("*.png"))[:8]:
            img = Image.open(path)
            right += classifier(img)[0]["label"] == label
    assert right >= 15  # the toy task is really learned (16 test images)


def test_train_model_card_has_the_settings_and_training_stats(trained):
    model_dir, result = trained
    card = (model_dir / "README.md").read_text()
    for needle in (
        "batch size: 8",
        "learning rate: 0.001",
        "base_model:",
        "## Training Stats",
        "'eval_accuracy'",
    ):
        assert needle in card
    for key in CARD_STATS:
        assert f"'{key}'" in result.stdout


def test_the_space_serves_the_trained_model(trained, toy):
    clf = NSFWClassifier.from_pretrained(str(trained[0]), precision="fp32")
    assert clf.labels == ["normal", "nsfw"]
    assert clf.predict(toy / "data" / "test" / "nsfw" / "0.png").label == "nsfw"
    assert clf.predict(toy / "data" / "test" / "normal" / "0.png").label == "normal"


def test_eval_writes_metrics_plots_and_a_summary(trained, toy, tmp_path):
    out = tmp_path / "eval"
    result = run_cli("eval", str(toy / "data"), "--model", str(trained[0]), "--output-dir", str(out), "-q")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in CARD_STATS:
        assert isinstance(metrics[key], float)
    assert metrics["eval_accuracy"] >= 15 / 16 and metrics["nsfw_roc_auc"] >= 0.95
    assert metrics["nsfw_precision"] >= 0.9 and metrics["nsfw_recall"] >= 0.9 and metrics["nsfw_f1"] >= 0.9
    assert np.sum(metrics["confusion_matrix"]["matrix"]) == 16
    target = metrics["threshold_for_target_precision"]
    assert target["precision"] >= 0.95 and 0.0 <= target["threshold"] <= 1.0 and target["recall"] > 0.8
    assert metrics["skipped_unreadable"] == 1 and metrics["images"] == 16
    for plot in ("roc.png", "precision_recall_threshold.png", "score_histogram.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.width > 300
    assert "- 'eval_loss':" in result.stdout and "threshold for precision >= 0.95" in result.stdout
    policy = Policy.load(out / "policy.json")  # the same file NSFW_SPACE_POLICY loads
    assert policy.targets == {"block_precision": 0.99, "review_recall": 0.95}
    assert policy.data["images"] == 16 and policy.data["nsfw"] + policy.data["normal"] == 16
    assert policy.model == str(trained[0]) and 0 <= policy.review <= policy.block <= 1
    assert metrics["policy"]["block"] == policy.block and metrics["policy"]["warnings"]  # 16 images: too few
    assert "policy.json: block at" in result.stdout and "rule of three" in result.stdout


def test_eval_refuses_folders_that_are_not_labels(trained, tmp_path):
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "cats" / "a.png")
    result = run_cli(
        "eval", str(tmp_path), "--model", str(trained[0]), "--output-dir", str(tmp_path / "o"), "-q"
    )
    assert result.returncode == 2 and "cats" in result.stderr and "Traceback" not in result.stderr


def test_train_with_an_unreachable_base_says_so(toy, tmp_path):
    result = run_cli("train", str(toy / "data"), "--output-dir", str(tmp_path / "m"), "--quiet")
    assert result.returncode == 2
    assert "google/vit-base-patch16-224-in21k" in result.stderr and "--base" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_split_without_train_test_folders(toy, tmp_path):
    flat = tmp_path / "flat"
    for label in ("normal", "nsfw"):
        (flat / label).mkdir(parents=True)
        for path in sorted((toy / "data" / "train" / label).glob("*.png"))[:10]:
            (flat / label / path.name).write_bytes(path.read_bytes())
    result = run_cli(
        "train",
        str(flat),
        "--base",
        str(toy / "base"),
        "--output-dir",
        str(tmp_path / "m"),
        "--epochs",
        "1",
        "--eval-split",
        "0.3",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads((tmp_path / "m" / "training_settings.json").read_text())
    assert settings["train_images"] == 14 and settings["eval_images"] == 6
