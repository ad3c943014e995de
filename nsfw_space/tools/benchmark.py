"""Side-by-side speed: the model card's pipeline snippet against our path, in one process, alternating.

Both run on the same generated JPEGs of mixed sizes with the same model (by default a ViT-B/16 of
the card's architecture with random weights and a head that makes scores vary between images, so
score differences are meaningful). Prints images/s, their ratio, the largest score difference,
single-image latency and peak memory of each.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nsfw_space.media.budgets import process_rss_mb
from nsfw_space.model.classifier import NSFWClassifier
from nsfw_space.model.device import cpu_description, cpu_has_fast_bf16
from nsfw_space.tools.synthetic import (
    VIT_BASE,
    build_model_dir,
    jpeg_bytes,
    varied_image,
    with_outlier_channels,
)

logger = logging.getLogger(__name__)

MIXED_SIZES = [(640, 480), (1024, 768), (1920, 1080), (2048, 1536), (3264, 2448), (4032, 3024)]


@dataclass
class PathResult:
    name: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    def images_per_second(self, count: int) -> float:
        return count / statistics.median(self.seconds)


def make_images(folder: Path, count: int, sizes: list[tuple[int, int]] | None = None) -> list[Path]:
    """``count`` JPEGs cycling through ``sizes`` (phone-photo sizes by default), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or MIXED_SIZES
    paths = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        path = folder / f"bench-{index:03d}-{width}x{height}.jpg"
        if not path.exists():
            small = varied_image(index, (width // 4, height // 4))
            path.write_bytes(jpeg_bytes(small.resize((width, height)), quality=90))
        paths.append(path)
    return paths


class PeakMemory:
    """Samples a process's resident memory (this one's by default) in a thread; ``peak_mb`` after
    the block."""

    def __init__(self, interval: float = 0.01, pid: int | None = None) -> None:
        self.interval = interval
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb(self.pid))
            time.sleep(self.interval)


def current_rss_mb(pid: int | None = None) -> float:
    """Resident memory in MB of process ``pid`` (this one by default; its peak, where /proc is
    missing)."""
    rss = process_rss_mb(pid or os.getpid())
    if rss is not None:
        return rss
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CardSnippet:
    """The model card's first snippet, one image at a time, in a process of its own, as a user's
    script runs it: called with paths, it returns {path: nsfw score}.

    Not in this process: the classifier here keeps its buffers in the heap (see
    ``media.budgets.keep_buffers_in_heap``), which a plain script does not, and the card's
    pipeline gains from it too (the full-size decodes of large photographs): on an AVX2-only EPYC
    it faulted about 1,000,000 pages and spent 3.3 s in the kernel on the bench's 64 files in a
    plain process, 44,000 pages and 0.2 s beside our classifier."""

    def __init__(self, model_dir: str) -> None:
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        self._connection, child = spawn.Pipe()
        self._process = spawn.Process(target=_card_worker, args=(model_dir, child), daemon=True)
        self._process.start()
        child.close()
        self._answer()  # loaded

    @property
    def pid(self) -> int:
        return self._process.pid

    def __call__(self, paths: list[Path]) -> dict[str, float]:
        self._connection.send([str(path) for path in paths])
        return self._answer()

    def close(self) -> None:
        self._connection.close()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()

    def _answer(self):
        kind, value = self._connection.recv()
        if kind == "error":
            raise RuntimeError(f"the card's snippet failed: {value}")
        return value


def _card_worker(model_dir: str, connection) -> None:
    """Child process: load the card's pipeline, then score each list of paths it is sent."""
    try:
        from PIL import Image
        from transformers import pipeline

        classifier = pipeline("image-classification", model=model_dir)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send(("error", f"{type(err).__name__}: {err}"))
        return
    connection.send(("ok", None))
    while True:
        try:
            paths = connection.recv()
        except EOFError:
            return
        try:
            scores = {}
            for path in paths:
                img = Image.open(path)
                result = {item["label"]: item["score"] for item in classifier(img)}
                scores[path] = result["nsfw"]
            connection.send(("ok", scores))
        except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
            connection.send(("error", f"{type(err).__name__}: {err}"))


def our_path(classifier: NSFWClassifier, batch_size: int) -> Callable[[list[Path]], dict[str, float]]:
    def run(paths: list[Path]) -> dict[str, float]:
        return {str(p.source): p.nsfw_score for p in classifier.predict_batch(paths, batch_size=batch_size)}

    return run


def run_benchmark(
    *,
    model_dir: str | None = None,
    images: int = 64,
    rounds: int = 2,
    batch_size: int = 16,
    precision: str = "auto",
    device: str = "auto",
    compile_model: bool = False,
    workdir: str | None = None,
) -> str:
    """Run the card's snippet and our path(s) ``rounds`` times, alternating; return the comparison."""
    root = Path(workdir or tempfile.mkdtemp(prefix="nsfw-bench-"))
    model_dir = model_dir or ensure_benchmark_model(root)
    paths = make_images(root / "images", images)
    latency_image = make_images(root / "latency", 2, [(1024, 768)])[1]

    card = CardSnippet(model_dir)  # in a process of its own, as a user's script runs it
    try:
        runners: dict[str, tuple[PathResult, Callable, Callable, int | None]] = {
            "card": (
                PathResult("model card pipeline, fp32, 1 at a time (own process)"),
                card,
                lambda: card([latency_image]),
                card.pid,
            )
        }
        ours = NSFWClassifier.from_pretrained(model_dir, device=device, precision=precision)
        if not ours.wait_until_ready(0):
            logger.info("waiting for the int8 build (once per model and CPU) before timing")
            ours.wait_until_ready()
        first_batches = []
        for _ in range(2):  # warm-up stalls show as a first batch much slower than the second
            started = time.perf_counter()
            ours.predict_batch(paths[:batch_size], batch_size=batch_size)
            first_batches.append(time.perf_counter() - started)
        runners["ours"] = (
            PathResult(f"nsfw_space predict_batch, {ours.precision}, batch {batch_size}"),
            our_path(ours, batch_size),
            lambda: ours.predict(latency_image),
            None,
        )
        if compile_model:
            compiled = NSFWClassifier.from_pretrained(
                model_dir, device=device, precision=precision, optimize="none"
            )
            started = time.perf_counter()
            compiled.optimize("compile", batch_size)
            compiled.predict_batch(paths[:batch_size], batch_size=batch_size)
            warmup = time.perf_counter() - started
            runners["compiled"] = (
                PathResult(
                    f"  same + torch.compile (warm-up {warmup:.0f} s; 1 image padded to {batch_size})"
                ),
                our_path(compiled, batch_size),
                lambda: compiled.predict(latency_image),
                None,
            )
        for _, run, single, _ in runners.values():  # warm every path up on a full batch and a single image
            run(paths[:batch_size])
            single()
        for _ in range(rounds):
            for result, run, single, pid in runners.values():
                idle = current_rss_mb(pid)
                with PeakMemory(pid=pid) as memory:
                    started = time.perf_counter()
                    result.scores = run(paths)
                    result.seconds.append(time.perf_counter() - started)
                result.peak_rss_mb = max(result.peak_rss_mb, memory.peak_mb - idle)
                for _ in range(3):
                    started = time.perf_counter()
                    single()
                    result.latency_ms.append((time.perf_counter() - started) * 1000)
        report = format_comparison([r for r, _, _, _ in runners.values()], len(paths), ours)
        first, second = first_batches
        model_only = model_only_rate(ours, paths, batch_size)
        return (
            f"{report}\nmodel only, batch {batch_size}: {model_only:.1f} images/s ({ours.precision}, "
            f"preprocessed pixels in, probabilities out)\nfirst predict_batch of {batch_size} after "
            f"loading: {first:.2f} s, the second: {second:.2f} s ({first / second:.2f}x)"
        )
    finally:
        card.close()


def model_only_rate(
    classifier: NSFWClassifier, paths: list[Path], batch_size: int, seconds: float = 5.0
) -> float:
    """Images/s of the forward pass alone on one batch of ``batch_size`` preprocessed images."""
    import numpy as np

    decoded = [classifier.decode(path).pixels for path in paths[:batch_size]]
    pixels = np.concatenate(decoded)
    while len(pixels) < batch_size:  # fewer files than the batch: repeat them
        pixels = np.concatenate([pixels, pixels])[:batch_size]
    classifier.probabilities(pixels)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.probabilities(pixels)
        count += len(pixels)
    return count / (time.perf_counter() - started)


def ensure_benchmark_model(root: Path) -> str:
    """A ViT-B/16 of the card's architecture, random weights, head spread (built once in ``root``)."""
    model_dir = root / "vit-base-random"
    if not (model_dir / "config.json").exists():
        build_model_dir(model_dir, architecture=VIT_BASE)
    return str(model_dir)


def ensure_outlier_model(root: Path, *, values: bool) -> str:
    """The benchmark model rewritten with outlier channels entering every block (and, with
    ``values``, in every attention's values too): the same function (``with_outlier_channels``),
    built once in ``root`` beside it."""
    model_dir = root / ("vit-base-outliers-values" if values else "vit-base-outliers")
    if not (model_dir / "config.json").exists():
        with_outlier_channels(ensure_benchmark_model(root), model_dir, values=values)
    return str(model_dir)


def format_comparison(results: list[PathResult], count: int, classifier: NSFWClassifier) -> str:
    card = results[0]
    card_rate = card.images_per_second(count)
    sizes = ", ".join(f"{w}x{h}" for w, h in MIXED_SIZES)
    spread = max(card.scores.values()) - min(card.scores.values())
    lines = [
        f"machine: {cpu_description()}; {platform.machine()}; torch {_torch_version()}, "
        f"{_threads()} threads; bf16 in hardware: {'yes' if cpu_has_fast_bf16() else 'no'}; "
        f"device {classifier.device}, {classifier.precision}",
        f"{count} JPEGs of mixed sizes ({sizes}), files to scores, median of {len(card.seconds)} "
        f"alternating rounds; {model_description(classifier)}",
        "",
        f"{'path':<58} {'images/s':>9} {'vs card':>8} {'1 image ms':>11} {'max |diff|':>11} {'work MB':>8}",
    ]
    for result in results:
        rate = result.images_per_second(count)
        diff = max(abs(result.scores[path] - card.scores[path]) for path in card.scores)
        lines.append(
            f"{result.name:<58} {rate:>9.1f} {rate / card_rate:>7.1f}x "
            f"{statistics.median(result.latency_ms):>11.0f} {diff:>11.4f} {result.peak_rss_mb:>8.0f}"
        )
    lines += [
        "",
        f"max |diff|: largest nsfw score difference from the card's snippet (scores span {spread:.2f} "
        "across the images).",
        "1 image ms: one 1024x768 JPEG file to scores. work MB: peak resident memory above the "
        "process's idle level during the run.",
    ]
    return "\n".join(lines)


def model_description(classifier: NSFWClassifier) -> str:
    """What was timed, from the model's config: the card's ViT-B/16, or the size of another."""
    config = classifier.model.config
    shape = (
        getattr(config, "num_hidden_layers", None),
        getattr(config, "hidden_size", None),
        getattr(config, "patch_size", None),
        getattr(config, "image_size", None),
    )
    if shape == (12, 768, 16, 224):
        return "ViT-B/16 at 224 px (the card's architecture)"
    layers, hidden, patch, size = shape
    return f"{config.model_type}: {layers} layers, hidden size {hidden}, patch {patch}, {size} px"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _torch_version() -> str:
    import torch

    return torch.__version__


def run_api_benchmark(
    *, model_dir: str | None = None, calls: int = 30, precision: str = "auto", workdir: str | None = None
) -> str:
    """p50/p95 of ``/classify``: a bare gr.Interface around the card's pipeline, a no-op
    gr.Interface with the same image input (what Gradio and its client cost alone) and this Space,
    same model, same 1024x768 JPEG, calls alternating; through ``gradio_client`` as it comes,
    through ``gradio_client`` given one TLS context for all its requests (docs/api.md),
    and through the plain HTTP API (upload, call, read the event stream, as curl would).

    Each server runs in a child process of its own, as a Space would; the clients run here.
    """
    import multiprocessing

    import httpx
    from gradio_client import Client, handle_file

    root = Path(workdir or tempfile.mkdtemp(prefix="nsfw-bench-"))
    model_dir = model_dir or ensure_benchmark_model(root)
    image = str(make_images(root / "latency", 2, [(1024, 768)])[1])

    spawn = multiprocessing.get_context("spawn")
    servers, found = [], {}
    try:
        for name in SERVERS:  # each in a process of its own, as each would be on its own Space
            urls: multiprocessing.Queue = spawn.Queue()
            server = spawn.Process(target=_serve, args=(name, model_dir, precision, urls), daemon=True)
            server.start()
            servers.append(server)
            url = urls.get(timeout=300)
            if not url.startswith("http"):
                raise RuntimeError(f"benchmark server {name!r} did not start: {url}")
            found[name] = url
        clients = {name: Client(url, verbose=False) for name, url in found.items()}
        context = httpx.create_ssl_context()  # built once, as docs/api.md shows callers
        shared = {name: Client(url, verbose=False, ssl_verify=context) for name, url in found.items()}
        plain = {name: httpx.Client(base_url=url, timeout=60) for name, url in found.items()}
        calls_by_kind = {
            "gradio_client": lambda name: clients[name].predict(handle_file(image), api_name="/classify"),
            "one TLS context": lambda name: shared[name].predict(handle_file(image), api_name="/classify"),
            "plain HTTP": lambda name: plain_http_classify(plain[name], image),
        }
        # one kind of client at a time (a plain call right after a gradio_client call to the same
        # server measured 102 ms p50 against 66 to 81 ms for plain calls alone, in one process)
        latencies = {kind: _alternating(call, list(found), calls) for kind, call in calls_by_kind.items()}
    finally:
        for server in servers:
            server.terminate()
            server.join(timeout=30)
    lines = [
        f"/classify, one 1024x768 JPEG, {calls} calls each per kind of client, servers alternating; "
        f"{cpu_description()}; each server in a process of its own",
        f"{'server':<50} {'gradio_client p50':>17} {'p95':>5} {'one TLS context p50':>19} {'p95':>5} "
        f"{'plain HTTP p50':>14} {'p95':>5}",
    ]
    for name in found:
        cells = []
        for kind, width in (("gradio_client", 14), ("one TLS context", 16), ("plain HTTP", 11)):
            p50, p95 = _p50_p95(latencies[kind][name])
            cells.append(f"{p50:>{width}.0f} ms {p95:>5.0f}")
        lines.append(f"{name:<50} " + " ".join(cells))
    lines += [
        "",
        f"gradio_client: Client(url) as it comes; it builds a new TLS context ({tls_context_ms():.0f} ms "
        "of CPU here, median of 5) for each of its requests, even to http://.",
        "one TLS context: Client(url, ssl_verify=context), one context built once and used for "
        "every request (docs/api.md).",
    ]
    return "\n".join(lines)


def tls_context_ms(repeats: int = 5) -> float:
    """CPU milliseconds to build one TLS context as httpx does for every new client (median)."""
    import httpx

    times = []
    for _ in range(repeats):
        started = time.process_time()
        httpx.create_ssl_context()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def plain_http_classify(client, image: str) -> dict:
    """One ``/classify`` over the plain HTTP API: upload, call, read the event stream."""
    import json

    with open(image, "rb") as handle:
        uploaded = client.post("/gradio_api/upload", files={"files": handle})
    uploaded.raise_for_status()
    file = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
    event_id = client.post("/gradio_api/call/classify", json={"data": [file]}).json()["event_id"]
    stream = client.get(f"/gradio_api/call/classify/{event_id}").text
    if "event: complete" not in stream:
        raise RuntimeError(f"/classify over plain HTTP did not complete: {stream[-300:]}")
    return json.loads(stream.rsplit("data:", 1)[1])[0]


def _alternating(call: Callable[[str], object], names: list[str], calls: int) -> dict[str, list[float]]:
    """Milliseconds of ``calls`` calls to each named server, one server after another, after two
    warm-up calls each."""
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for index in range(calls + 2):
        for name in names:
            started = time.perf_counter()
            call(name)
            if index >= 2:
                latencies[name].append((time.perf_counter() - started) * 1000)
    return latencies


def _p50_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


CARD_SERVER = "card pipeline in a bare gr.Interface"
NO_OP_SERVER = "no-op gr.Interface (Gradio and its client alone)"
THIS_SPACE = "this Space (nsfw_space.space.demo)"
SERVERS = (CARD_SERVER, NO_OP_SERVER, THIS_SPACE)


def _serve(name: str, model_dir: str, precision: str, urls) -> None:
    """Child process: launch one of SERVERS, send its URL (or why it failed), then wait."""
    try:
        import gradio as gr

        options: dict = {}
        if name == CARD_SERVER:  # the card's snippet as its own Space would serve it
            from transformers import pipeline

            card_pipe = pipeline("image-classification", model=model_dir)

            def card_classify(img):
                return {item["label"]: item["score"] for item in card_pipe(img)}

            demo = gr.Interface(card_classify, gr.Image(type="pil"), gr.Label(), api_name="classify")
        elif name == NO_OP_SERVER:
            fixed = {"normal": 0.5, "nsfw": 0.5}
            demo = gr.Interface(lambda _image: fixed, gr.Image(type="pil"), gr.Label(), api_name="classify")
        else:
            from nsfw_space.config import Settings
            from nsfw_space.space.demo import create_demo, launch_options

            settings = Settings(precision=precision)
            classifier = NSFWClassifier.from_pretrained(model_dir, precision=precision)
            classifier.wait_until_ready()  # timed in its steady state (an int8 build is once per CPU)
            demo = create_demo(classifier, settings)
            options = {k: v for k, v in launch_options(settings).items() if k not in ("theme", "css")}
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **options)
        urls.put(url)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
        urls.put(f"{type(err).__name__}: {err}")
        return
    threading.Event().wait()
