"""Local engine against the Ray engine (1 and 2 workers) on the same generated images, side by side.

    python benchmarks/scale.py [--images 2000] [--model DIR] [--workdir /tmp/nsfw-scale]

Each run is ``python -m nsfw_space scan FOLDER -o OUT.jsonl [--engine ray --workers N]`` in a
process of its own (Ray started on this machine), timed from start to exit, with the peak resident
memory of the process tree sampled every 0.2 s. Without ``--model`` a tiny ViT is built, so the
figures show what each engine costs around the model; with the card's ViT-B the model dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it (Ray's workers included)."""
    listing = subprocess.run(
        ["ps", "-eo", "pid,ppid,rss"], capture_output=True, text=True
    ).stdout.splitlines()[1:]
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for line in listing:
        child, parent, size = (int(value) for value in line.split())
        children.setdefault(parent, []).append(child)
        rss[child] = size
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack += children.get(current, [])
    return total / 1024


def timed(command: list[str]) -> tuple[float, float]:
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), NSFW_SPACE_PRECISION=os.environ.get("NSFW_SPACE_PRECISION", "fp32")
    )
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_rss_mb(process.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(process.stderr.read().decode()[-2000:])
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--workdir", default="/tmp/nsfw-scale")
    parser.add_argument("--precision", default="fp32", help="the same for every engine (default fp32)")
    args = parser.parse_args()

    from nsfw_space.model.device import cpu_description
    from nsfw_space.tools.synthetic import build_model_dir, varied_image

    work = Path(args.workdir)
    folder = work / f"images-{args.images}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(args.images):
        path = folder / f"{index:05d}.jpg"
        if not path.exists():
            varied_image(index, (320, 240)).save(path, quality=90)
    model = args.model or str(work / "tiny")
    if not args.model and not (work / "tiny" / "config.json").exists():
        build_model_dir(work / "tiny")
    scan = [sys.executable, "-m", "nsfw_space", "scan", str(folder), "-m", model, "-q"]
    scan += ["--precision", args.precision]  # fp32: no int8 build aside in any engine's time
    runs = {
        "local engine": [],
        "ray engine, 1 worker": ["--engine", "ray", "--workers", "1"],  # holding both cores
        "ray engine, 2 workers": ["--engine", "ray", "--workers", "2"],
    }
    print(f"CPU: {cpu_description()}; {args.images} JPEGs of 320x240; model {model} in {args.precision}")
    print(f"{'engine':<24} {'seconds':>8} {'images/s':>9} {'peak MB':>8} {'rows':>6}")
    reference = None
    for name, extra in runs.items():
        out = work / f"{name.replace(' ', '-').replace(',', '')}.jsonl"
        out.unlink(missing_ok=True)
        seconds, peak = timed([*scan, "-o", str(out), *extra])
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        scores = {row["id"]: row["nsfw_score"] for row in rows}
        reference = reference or scores
        worst = max(abs(scores[key] - reference[key]) for key in reference)
        print(
            f"{name:<24} {seconds:>8.1f} {args.images / seconds:>9.1f} {peak:>8.0f} {len(rows):>6}  max |diff| {worst:.1e}"
        )


if __name__ == "__main__":
    main()
