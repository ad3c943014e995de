"""Resident memory of a ViT-B/16 classifier, plain vs. JIT-optimised, each in a fresh process.

    python benchmarks/memory.py [--workdir DIR]

Prints, side by side: RSS after loading, after one single-image call, and after a 64-image
predict_batch (batch 16), for optimize=none and optimize=jit (the default on CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

CHILD = """
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
from pathlib import Path
from nsfw_space import NSFWClassifier
from nsfw_space.tools.benchmark import current_rss_mb, make_images
model, workdir, mode = sys.argv[1:4]
paths = make_images(Path(workdir) / "images", 64)
clf = NSFWClassifier.from_pretrained(model, optimize=mode)
rows = {"loaded": current_rss_mb()}
clf.predict(paths[1]); rows["after 1 image"] = current_rss_mb()
clf.predict_batch(paths, batch_size=16); rows["after 64 images, batch 16"] = current_rss_mb()
print(json.dumps({"mode": clf.optimization, "precision": clf.precision, **rows}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nsfw-bench-"))
    from nsfw_space.tools.benchmark import ensure_benchmark_model

    model = ensure_benchmark_model(workdir)
    results = []
    for mode in ("none", "jit"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, model, str(workdir), mode],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = [k for k in results[0] if k not in ("mode", "precision")]
    print(
        f"{'resident memory, MB (ViT-B/16)':<32}"
        + "".join(f"{r['mode'] + ' ' + r['precision']:>12}" for r in results)
    )
    for key in keys:
        print(f"{key:<32}" + "".join(f"{r[key]:>12.0f}" for r in results))


if __name__ == "__main__":
    main()
