"""A Space's first start as a host sees it, with an empty cache: does every call hold while int8
(and, with private mode on, the browser model) is built, how slow are calls meanwhile, and does a
second start build again?

Starts ``python app.py`` (a process of its own, the model in MODEL_DIR, a new cache folder), and
from the first second after it answers: three gradio_client callers on ``/classify`` and one on
``/moderate_batch``, until the build has ended (the server's log says so) or ``--load-seconds``
have passed; then the build finishes unloaded, the same callers run on the quiet server, and a
second start with the same cache has its CPU time read while it idles.
Prints one side-by-side table.

    python benchmarks/start_holds.py --model DIR [--image examples/coffee.jpg] [--precision auto]
        [--private-mode on|off]

``--precision fp32 --private-mode on`` measures the browser model's build alone.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_ENDED = ("serving int8", "int8 not used", "int8 not built", "int8 build refused")
BROWSER_ENDED = ("browser model ready", "On this device tab is off", "building build refused")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    model: str, cache: str, precision: str, private: str = "0"
) -> tuple[subprocess.Popen, str, list[str]]:
    port = free_port()
    env = dict(
        os.environ,
        NSFW_SPACE_MODEL=model,
        NSFW_SPACE_CACHE_DIR=cache,
        NSFW_SPACE_PRECISION=precision,
        NSFW_SPACE_PRIVATE_MODE=private,
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
    )
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return process, url, lines
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the app did not answer within 300 s:\n" + "".join(lines[-20:]))


def call_until(url: str, image: str, stop: threading.Event, seconds: float | None = None) -> dict:
    """Three /classify callers and one /moderate_batch caller until ``stop`` (or ``seconds``)."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    failures: list[str] = []
    done_at = None if seconds is None else time.monotonic() + seconds

    def caller(batch: bool) -> None:
        client = Client(url, verbose=False)
        while not stop.is_set() and (done_at is None or time.monotonic() < done_at):
            started = time.perf_counter()
            try:
                if batch:
                    client.predict([handle_file(image)] * 4, api_name="/moderate_batch")
                else:
                    client.predict(handle_file(image), api_name="/classify")
                    latencies.append(time.perf_counter() - started)
            except Exception as err:  # noqa: BLE001 - failures are what is counted
                failures.append(str(err)[:120])

    threads = [threading.Thread(target=caller, args=(i == 3,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "calls": len(latencies),
        "failures": failures,
        "p50": statistics.median(latencies) if latencies else 0.0,
    }


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children so far (utime + stime + children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def same_plan_without_build(args: argparse.Namespace) -> tuple[str, dict]:
    """The plan ``auto`` serves before int8 (bf16 or fp32), int8 kept off, under the same callers."""
    from nsfw_space.model.device import cpu_has_fast_bf16

    precision = args.plain_precision or ("bf16" if cpu_has_fast_bf16() else "fp32")
    with tempfile.TemporaryDirectory() as cache:
        plain, url, _ = start(args.model, cache, precision)
        baseline = call_until(url, args.image, threading.Event(), seconds=args.load_seconds)
        plain.terminate()
        plain.wait(30)
    return precision, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", default=str(ROOT / "examples" / "coffee.jpg"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--quiet-seconds", type=float, default=40)
    parser.add_argument("--load-seconds", type=float, default=120, help="callers during the build, at most")
    parser.add_argument(
        "--plain-precision", default="", help="the plan served before int8 (default: as auto)"
    )
    parser.add_argument("--baseline-only", action="store_true", help="only the plan with no build")
    parser.add_argument(
        "--private-mode",
        choices=("on", "off"),
        default="on",
        help="build the browser model too (the default)",
    )
    args = parser.parse_args()
    from nsfw_space.model.device import cpu_description

    print(f"CPU: {cpu_description()}")
    if args.baseline_only:
        precision, baseline = same_plan_without_build(args)
        print(
            f"| {precision}, no build | {baseline['calls']} | {len(baseline['failures'])} | {1000 * baseline['p50']:.0f} |"
        )
        return
    with tempfile.TemporaryDirectory() as cache:
        private = "1" if args.private_mode == "on" else "0"
        process, url, lines = start(args.model, cache, args.precision, private)
        ready = time.monotonic()
        stop = threading.Event()
        awaited = ([BUILD_ENDED] if args.precision in ("auto", "int8") else []) + (
            [BROWSER_ENDED] if private == "1" else []
        )

        def ended(marks: tuple[str, ...]) -> bool:
            return any(any(mark in line for mark in marks) for line in list(lines))

        def watch() -> None:
            while not all(ended(marks) for marks in awaited):
                if process.poll() is not None:
                    break
                time.sleep(0.5)
            stop.set()

        threading.Thread(target=watch, daemon=True).start()
        during = call_until(url, args.image, stop, seconds=args.load_seconds)
        loaded_seconds = time.monotonic() - ready
        stop.wait(1800)  # the rest of the build, with no load
        build_seconds = time.monotonic() - ready
        outcome = (
            " / ".join(
                line.split(" INFO ", 1)[-1].strip()  # the logger and its message, without the time
                for line in lines
                if any(mark in line for mark in BUILD_ENDED + BROWSER_ENDED)
            )
            or "no build"
        )
        quiet = call_until(url, args.image, threading.Event(), seconds=args.quiet_seconds)
        process.terminate()
        process.wait(30)
        leftovers = (
            [p.name for p in (Path(cache) / "int8").glob(".*")] if (Path(cache) / "int8").exists() else []
        )

        again, _, again_lines = start(args.model, cache, args.precision, private)
        time.sleep(2)
        first = cpu_seconds(again.pid)
        time.sleep(20)
        idle_cpu = cpu_seconds(again.pid) - first
        again.terminate()
        again.wait(30)
        skipped = next((line.strip() for line in again_lines if "int8" in line), "")

    plain_precision, baseline = same_plan_without_build(args)

    print(f"private mode: {args.private_mode}; precision: {args.precision}")
    print(f"build outcome: {outcome}")
    print(
        f"build took {build_seconds:.0f} s after the app answered (callers during its first {loaded_seconds:.0f} s)"
    )
    print("| phase | /classify calls | failed calls | /classify p50 ms |")
    print("|---|---|---|---|")
    rows = [
        (f"while building ({loaded_seconds:.0f} s)", during),
        (f"{plain_precision}, the same plan with no build ({args.load_seconds:.0f} s)", baseline),
        (f"after the swap, quiet ({args.quiet_seconds:.0f} s)", quiet),
    ]
    for name, phase in rows:
        print(f"| {name} | {phase['calls']} | {len(phase['failures'])} | {1000 * phase['p50']:.0f} |")
    if baseline["p50"]:
        print(f"p50 while building / the same plan with no build: {during['p50'] / baseline['p50']:.2f}x")
    print(f"work folders left in the cache: {leftovers or 'none'}")
    print(f"second start: {idle_cpu:.1f} CPU-seconds in 20 idle seconds; its int8 line: {skipped[-160:]}")
    for failure in during["failures"][:5] + quiet["failures"][:5]:
        print("failure:", failure)


if __name__ == "__main__":
    main()
