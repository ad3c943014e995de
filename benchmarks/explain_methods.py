"""Which torchcam method explains this model best, and at what cost: side by side.

    python benchmarks/explain_methods.py [--workdir /tmp/nsfw-explain] [--held-out 120] [--deletion 16]

For each method (Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM; each on every block, see
``nsfw_space/model/explain.py``):
- **pointing**: small ViTs trained here (seeds 0 and 1; seed 0 is the tests' model) on pictures
  where a planted texture square means nsfw (``nsfw_space.tools.planted``); on held-out planted
  pictures (squares on the patch grid), the share whose hottest pixel falls inside the square, and
  how much of the square and of the rest a redacted copy at the default level blurs;
- **deletion**: on the ViT-B/16-sized test model (random weights, spread head), the average drop of
  the nsfw score when the hottest 20% of the image is greyed, against greying a random 20%;
- **cost**: one explanation of a 1024x768 JPEG (decode, served prediction, map, overlay and redacted
  copy) against one ``predict`` of it, with the ViT-B-sized model in fp32.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pointing(classifier, pictures, method: str) -> tuple[float, float, float]:
    """(share of peaks inside the square, mean share of the square blurred, mean share of the rest
    left unchanged) over ``pictures``."""
    hits, inside, untouched = [], [], []
    for picture in pictures:
        explanation = classifier.explain(picture.image, method=method)
        left, top, right, bottom = picture.box
        row, column = np.unravel_index(np.argmax(explanation.heatmap), explanation.heatmap.shape)
        hits.append(left <= column < right and top <= row < bottom)
        redacted = np.asarray(explanation.redact()).astype(int)
        original = np.asarray(picture.image).astype(int)
        changed = np.abs(redacted - original).sum(axis=-1) > 0
        square = np.zeros(changed.shape, dtype=bool)
        square[top:bottom, left:right] = True
        inside.append(changed[square].mean())
        untouched.append(1 - changed[~square].mean())
    return float(np.mean(hits)), float(np.mean(inside)), float(np.mean(untouched))


def deletion(classifier, images, method: str, share: float = 0.2, seed: int = 0) -> tuple[float, float]:
    """Mean nsfw-score drop when the hottest ``share`` of each image is greyed, and when a random
    ``share`` is (the same number of pixels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    hot_drops, random_drops = [], []
    for image in images:
        explanation = classifier.explain(image, method=method)
        base = explanation.prediction.nsfw_score
        heat = explanation.heatmap
        count = int(share * heat.size)
        pixels = np.asarray(explanation.image).copy()
        hottest = np.argsort(heat, axis=None)[-count:]
        chosen = rng.choice(heat.size, count, replace=False)
        for picked, drops in ((hottest, hot_drops), (chosen, random_drops)):
            greyed = pixels.reshape(-1, 3).copy()
            greyed[picked] = 128
            score = classifier.predict(Image.fromarray(greyed.reshape(pixels.shape))).nsfw_score
            drops.append(base - score)
    return float(np.mean(hot_drops)), float(np.mean(random_drops))


def cost(classifier, data: bytes, method: str, rounds: int = 5) -> tuple[float, float]:
    """Median seconds of one explanation (map, overlay, redacted copy) and of one predict."""
    explain_times, predict_times = [], []
    classifier.explain(data, method=method)  # the fp32 copy is made on the first call
    for _ in range(rounds):
        started = time.perf_counter()
        explanation = classifier.explain(data, method=method)
        explanation.overlay()
        explanation.redact()
        explain_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        classifier.predict(data)
        predict_times.append(time.perf_counter() - started)
    return statistics.median(explain_times), statistics.median(predict_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/nsfw-explain")
    parser.add_argument("--held-out", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--deletion", type=int, default=16)
    args = parser.parse_args()

    import torch

    from nsfw_space import NSFWClassifier
    from nsfw_space.model.device import cpu_description
    from nsfw_space.model.explain import DEFAULT_LEVEL, METHODS
    from nsfw_space.tools.planted import planted_set, train_planted_model
    from nsfw_space.tools.synthetic import VIT_BASE, build_model_dir, varied_image

    work = Path(args.workdir)
    vitb_dir = work / "vitb"
    planted: dict[int, NSFWClassifier] = {}
    for seed in args.seeds:
        folder = work / f"planted-{seed}"
        if not (folder / "config.json").exists():
            started = time.perf_counter()
            train_planted_model(folder, seed=seed)
            print(f"planted model (seed {seed}) trained in {time.perf_counter() - started:.1f} s")
        planted[seed] = NSFWClassifier.from_pretrained(str(folder), precision="fp32", optimize="none")
    if not (vitb_dir / "config.json").exists():
        build_model_dir(vitb_dir, architecture=VIT_BASE)
    vitb = NSFWClassifier.from_pretrained(str(vitb_dir), precision="fp32", optimize="none")
    held_out = planted_set(args.held_out, start=700_000, on_grid=True)
    flagged = [p for p in held_out if p.is_nsfw]
    images = [varied_image(seed, (224, 224)) for seed in range(args.deletion)]
    photo = io.BytesIO()
    varied_image(7, (1024, 768)).save(photo, format="JPEG", quality=90)

    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for seed, model in planted.items():
        right = np.mean([(model.predict(p.image).nsfw_score >= 0.5) == p.is_nsfw for p in held_out])
        print(f"planted model, seed {seed}: {right:.1%} right on {len(held_out)} held-out pictures")
    print(
        f"{len(flagged)} planted pictures explained per model; deletion on {len(images)} images; redaction at level {DEFAULT_LEVEL}"
    )
    columns = [f"peak in square (seed {seed})" for seed in planted]
    columns += [
        "square blurred",
        "rest unchanged",
        "drop top 20%",
        "drop random 20%",
        "explain s",
        "predict s",
        "ratio",
    ]
    print("| method | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for method in METHODS:
        cells = []
        blurred, untouched = [], []
        for model in planted.values():
            hit, inside, rest = pointing(model, flagged, method)
            cells.append(f"{hit:.1%}")
            blurred.append(inside)
            untouched.append(rest)
        hot, random = deletion(vitb, images, method)
        explain_s, predict_s = cost(vitb, photo.getvalue(), method)
        cells += [f"{np.mean(blurred):.1%}", f"{np.mean(untouched):.1%}", f"{hot:.4f}", f"{random:.4f}"]
        cells += [f"{explain_s:.3f}", f"{predict_s:.3f}", f"{explain_s / predict_s:.2f}"]
        print(f"| {method} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
