"""Server memory under plain HTTP calls: Gradio's sessions kept, and swept (nsfw_space.space.sessions).

    python benchmarks/api_sessions.py [--calls 2000]

Each call over the plain HTTP API (upload, ``POST /gradio_api/call/classify``, read the event
stream, as curl does) comes with a new session hash, and Gradio keeps a session state for each.
Starts the Space (a tiny ViT: the sessions do not depend on the model) in a child process twice:
with its sweeper held off, and with the sweeper's idle time and period cut to 5 s (the Space
drops idle stateless sessions after 10 minutes; 5 s shows the same in a short run). Prints the
CPU, then side by side the server's resident memory above where it was after 50 warm-up calls,
every 500 calls, and the sessions Gradio holds at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CASES = {"sessions kept (Gradio alone)": None, "swept (idle 5 s, every 5 s)": 5.0}


def serve(model_dir: str, sweep_seconds: float | None, urls, counts) -> None:
    """Child process: the Space on 127.0.0.1 with its sweeper as the case asks."""
    from nsfw_space import NSFWClassifier, Settings
    from nsfw_space.space import sessions

    sessions.SWEEP_SECONDS = sweep_seconds or 10**9  # held off: the first sweep in 30 years
    sessions.IDLE_SECONDS = sweep_seconds or sessions.IDLE_SECONDS
    from nsfw_space.space import demo as demo_module

    classifier = NSFWClassifier.from_pretrained(model_dir, precision="fp32")
    settings = Settings(private_mode=False)
    demo = demo_module.create_demo(classifier, settings)
    options = {k: v for k, v in demo_module.launch_options(settings).items() if k not in ("theme", "css")}
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **options)
    urls.put(url)
    while True:
        counts.put(len(demo.state_holder.session_data))
        time.sleep(1)


def run_case(model_dir: str, sweep_seconds: float | None, calls: int, image: str) -> tuple[list[float], int]:
    import httpx

    from nsfw_space.media.budgets import process_rss_mb
    from nsfw_space.tools.benchmark import plain_http_classify

    def resident_mb() -> float:
        return process_rss_mb(server.pid) or 0.0

    spawn = multiprocessing.get_context("spawn")
    urls, counts = spawn.Queue(), spawn.Queue()
    server = spawn.Process(target=serve, args=(model_dir, sweep_seconds, urls, counts), daemon=True)
    server.start()
    try:
        client = httpx.Client(base_url=urls.get(timeout=300), timeout=60)
        for _ in range(50):
            plain_http_classify(client, image)
        base, growth = resident_mb(), []
        for done in range(1, calls + 1):
            plain_http_classify(client, image)
            if done % 500 == 0:
                growth.append(resident_mb() - base)
        time.sleep(2 * (sweep_seconds or 0) + 1.5)  # a last sweep, then the latest count
        held = None
        while not counts.empty() or held is None:
            held = counts.get(timeout=10)
        return growth, held
    finally:
        server.terminate()
        server.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="plain HTTP calls per case (default 2000)")
    args = parser.parse_args()

    from nsfw_space.model.device import cpu_description
    from nsfw_space.tools.benchmark import make_images
    from nsfw_space.tools.synthetic import build_model_dir

    work = Path(tempfile.mkdtemp(prefix="nsfw-sessions-"))
    model_dir = build_model_dir(work / "tiny")
    image = str(make_images(work / "images", 2, [(1024, 768)])[1])
    results = {name: run_case(str(model_dir), sweep, args.calls, image) for name, sweep in CASES.items()}
    print(f"machine: {cpu_description()}; /classify over plain HTTP, one 1024x768 JPEG, a tiny ViT")
    steps = [500 * (i + 1) for i in range(args.calls // 500)]
    print(f"{'case':<30} " + " ".join(f"{f'+MB at {n}':>12}" for n in steps) + f" {'sessions held':>14}")
    for name, (growth, held) in results.items():
        print(f"{name:<30} " + " ".join(f"{mb:>12.0f}" for mb in growth) + f" {held:>14}")


if __name__ == "__main__":
    main()
