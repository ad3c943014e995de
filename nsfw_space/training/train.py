"""The model card's recipe: fine-tune a ViT on labelled folders with the transformers Trainer.

Defaults are the card's: base ``google/vit-base-patch16-224-in21k``, batch size 16, learning rate
5e-5. The output directory loads as is with the card's own snippets and as ``NSFW_SPACE_MODEL``:
safetensors weights, a config with the label maps, the image processor, and a model card README
with the training settings and the final Training Stats.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nsfw_space.errors import ConfigError, InvalidImageError, ModelLoadError
from nsfw_space.media.images import load_image
from nsfw_space.training.datasets import LabelledFiles, load_splits

logger = logging.getLogger(__name__)

CARD_BASE = "google/vit-base-patch16-224-in21k"
STAT_KEYS = ("eval_loss", "eval_accuracy", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


class FolderDataset(torch.utils.data.Dataset):
    """Labelled image files -> {"pixel_values", "labels"}; unreadable files are skipped up front."""

    def __init__(self, files: LabelledFiles, label2id: dict[str, int], processor: Any) -> None:
        self.items: list[tuple[Path, int]] = []
        self.skipped: list[str] = []
        self.processor = processor
        for path, label in zip(files.paths, files.labels, strict=True):
            try:
                load_image(path, draft_size=(448, 448))
            except InvalidImageError as err:
                self.skipped.append(f"{path}: {err}")
                continue
            self.items.append((path, label2id[label]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, label = self.items[index]
        image = load_image(path, draft_size=(448, 448))
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": torch.tensor(label)}


def train(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    base: str = CARD_BASE,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    epochs: float = 3.0,
    eval_split: float = 0.2,
    seed: int = 42,
    progress: bool = True,
) -> dict[str, float]:
    """Fine-tune ``base`` on ``data_dir``; write the model to ``output_dir``; return the eval stats."""
    require_accelerate()
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(seed)
    train_files, test_files = load_splits(data_dir, eval_split=eval_split, seed=seed)
    labels = sorted(set(train_files.labels))
    label2id = {label: i for i, label in enumerate(labels)}
    model, processor = _load_base(base, labels)

    train_set = FolderDataset(train_files, label2id, processor)
    test_set = FolderDataset(test_files, label2id, processor)
    for skipped in train_set.skipped + test_set.skipped:
        logger.warning("skipped unreadable file %s", skipped)
    output_dir = Path(output_dir)
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
    )

    def accuracy(prediction: Any) -> dict[str, float]:
        logits, references = prediction
        return {"accuracy": float((np.argmax(logits, axis=-1) == references).mean())}

    trainer = Trainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=test_set, compute_metrics=accuracy
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    stats = {key: float(value) for key, value in trainer.evaluate().items() if key in STAT_KEYS}
    settings = {
        "base": base,
        "labels": labels,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "epochs": epochs,
        "seed": seed,
        "train_images": len(train_set),
        "eval_images": len(test_set),
        "skipped_unreadable": len(train_set.skipped) + len(test_set.skipped),
        "train_seconds": round(train_seconds, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    _save(trainer.model, processor, output_dir, settings, stats)
    return stats


def require_accelerate() -> None:
    """Raise ConfigError saying how to install accelerate (the Trainer needs it) when it is missing."""
    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError(
            'Training needs the accelerate package: pip install "nsfw-space[train]" (or accelerate).'
        )


def _load_base(base: str, labels: list[str]) -> tuple[Any, Any]:
    """The base model with a fresh head for ``labels``, and its processor; ModelLoadError names --base."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from nsfw_space.model.loading import describe_failure, locate_for_loading

    label2id = {label: i for i, label in enumerate(labels)}
    source, local_only = locate_for_loading(base, None, setting="--base")
    try:
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForImageClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label={i: label for label, i in label2id.items()},
            label2id=label2id,
            ignore_mismatched_sizes=True,
            local_files_only=local_only,
            use_safetensors=True,
        )
    except Exception as err:
        raise ModelLoadError(describe_failure(base, None, err, setting="--base")) from err
    return model, processor


def _save(
    model: Any, processor: Any, output_dir: Path, settings: dict[str, Any], stats: dict[str, float]
) -> None:
    """The trained model (safetensors), its processor, the settings and a model card."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    (output_dir / "training_settings.json").write_text(json.dumps(settings, indent=2))
    (output_dir / "README.md").write_text(model_card(settings, stats))
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)


def training_stats_text(stats: dict[str, float]) -> str:
    """The Training Stats block, in the model card's own form."""
    return "\n".join(f"- '{key}': {stats[key]}," for key in STAT_KEYS if key in stats).rstrip(",")


def model_card(settings: dict[str, Any], stats: dict[str, float]) -> str:
    labels = ", ".join(f'"{label}"' for label in settings["labels"])
    return f"""---
library_name: transformers
pipeline_tag: image-classification
base_model: {settings["base"]}
tags:
  - image-classification
  - nsfw-space
---

# Fine-tuned Vision Transformer for image classification

Made with `python -m nsfw_space train` (nsfw-space), following the recipe of the
Falconsai/nsfw_image_detection model card: the base model `{settings["base"]}` fine-tuned with the
transformers Trainer on {settings["train_images"]} images in {len(settings["labels"])} classes ({labels}).

## Training settings

- base model: `{settings["base"]}`
- batch size: {settings["batch_size"]}
- learning rate: {settings["learning_rate"]}
- epochs: {settings["epochs"]}
- seed: {settings["seed"]}
- train images: {settings["train_images"]}; evaluation images: {settings["eval_images"]}; unreadable files skipped: {settings["skipped_unreadable"]}
- device: {settings["device"]}; training took {settings["train_seconds"]} s

## How to use

```python
from PIL import Image
from transformers import pipeline

classifier = pipeline("image-classification", model="<this directory>")
classifier(Image.open("<path_to_image_file>"))
```

or serve it: `NSFW_SPACE_MODEL=<this directory> python app.py`.

## Training Stats

{training_stats_text(stats)}
"""
