"""A bounded load test: N concurrent gradio_client users against a Space on this machine.

Prints how many calls were answered (and with the right scores), refused as busy, or failed;
latency p50/p95; and the server's resident memory after each round.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from nsfw_space.errors import ConfigError
from nsfw_space.media.budgets import process_rss_mb

logger = logging.getLogger(__name__)

MAX_USERS = 256
MAX_ROUNDS = 20
BUSY_WORDS = ("queue is full", "busy", "too many")


@dataclass
class RoundResult:
    answered: int = 0
    wrong: int = 0
    busy: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_mb: float | None = None


def run_loadtest(
    url: str,
    image: str | Path,
    *,
    users: int = 64,
    rounds: int = 2,
    server_pid: int | None = None,
    max_seconds: float = 300.0,
) -> list[RoundResult]:
    """Run ``rounds`` rounds of ``users`` simultaneous ``/classify`` calls; stop at ``max_seconds``."""
    from gradio_client import Client, handle_file

    _check_local(url)
    users = min(max(1, users), MAX_USERS)
    rounds = min(max(1, rounds), MAX_ROUNDS)
    deadline = time.monotonic() + max_seconds
    reference = Client(url, verbose=False).predict(handle_file(str(image)), api_name="/classify")
    expected = {item["label"]: item["confidence"] for item in reference["confidences"]}
    clients = [Client(url, verbose=False) for _ in range(users)]
    results = []
    with ThreadPoolExecutor(max_workers=users) as pool:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            outcome = RoundResult()
            calls = [pool.submit(_one_call, client, str(image), deadline) for client in clients]
            for call in calls:
                kind, seconds, detail = call.result()
                if kind == "ok":
                    got = {item["label"]: item["confidence"] for item in detail["confidences"]}
                    right = got.keys() == expected.keys() and all(
                        abs(got[k] - expected[k]) <= 0.01 for k in expected
                    )
                    outcome.answered += 1
                    outcome.wrong += 0 if right else 1
                    outcome.latencies.append(seconds)
                elif kind == "busy":
                    outcome.busy += 1
                else:
                    outcome.failed += 1
                    outcome.errors.append(str(detail)[:200])
            outcome.rss_mb = process_rss_mb(server_pid) if server_pid else None
            results.append(outcome)
    return results


def _one_call(client, image: str, deadline: float) -> tuple[str, float, object]:
    from gradio_client import handle_file

    started = time.perf_counter()
    try:
        timeout = max(1.0, deadline - time.monotonic())
        job = client.submit(handle_file(image), api_name="/classify")
        result = job.result(timeout=timeout)
        return "ok", time.perf_counter() - started, result
    except Exception as err:  # noqa: BLE001 - every failure is counted, none may stop the test
        text = str(err).lower()
        kind = "busy" if any(word in text for word in BUSY_WORDS) else "failed"
        return kind, time.perf_counter() - started, f"{type(err).__name__}: {err}"


def format_report(results: list[RoundResult], users: int) -> str:
    lines = [
        f"{'round':>5} {'users':>5} {'answered':>8} {'wrong':>5} {'busy':>5} {'failed':>6} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'server MB':>9}"
    ]
    for index, result in enumerate(results, 1):
        p50, p95 = percentile(result.latencies, 50), percentile(result.latencies, 95)
        rss = f"{result.rss_mb:.0f}" if result.rss_mb is not None else "-"
        lines.append(
            f"{index:>5} {users:>5} {result.answered:>8} {result.wrong:>5} {result.busy:>5} "
            f"{result.failed:>6} {p50 * 1000:>7.0f} {p95 * 1000:>7.0f} {rss:>9}"
        )
        lines.extend(f"      failure: {error}" for error in result.errors[:3])
    return "\n".join(lines)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_local_server(
    env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[subprocess.Popen, str]:
    """Start ``python -m nsfw_space serve`` on a free loopback port; return (process, url)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    child_env = dict(os.environ if env is None else env)
    child_env.update(
        GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nsfw_space", "serve"],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise ConfigError(f"the server did not start: {process.stderr.read().strip()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(0.5)
                return process, url
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise ConfigError("the server did not start in time")


def _check_local(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        raise ConfigError(f"loadtest only targets this machine (127.0.0.1 or localhost), not {host!r}.")
