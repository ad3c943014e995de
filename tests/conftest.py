"""Shared fixtures: tiny ViTs built offline, image factories, and a launched app with a client."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")
# Apps and CLIs started by tests run fp32 unless a test asks otherwise: building int8 aside (a
# background compile) is tested in test_int8.py, not as a side effect of every app start.
os.environ.setdefault("NSFW_SPACE_PRECISION", "fp32")
# Likewise the on-device model (an ONNX export in a child process): tested in test_private.py.
os.environ.setdefault("NSFW_SPACE_PRIVATE_MODE", "0")
if "NSFW_SPACE_CACHE_DIR" not in os.environ:  # a cache of this process's own, gone when it ends
    _cache = tempfile.TemporaryDirectory(prefix="nsfw-space-test-cache-", ignore_cleanup_errors=True)
    os.environ["NSFW_SPACE_CACHE_DIR"] = _cache.name
# The test processes (pyproject's `-n 2`) share out the cores, and so do the commands and servers
# they start: two processes each running torch on both of two cores wait at every parallel step
# for a thread the other has preempted. Measured on 2 cores: the suite 684 s -> 620 s, the CPUs
# idle 15 % -> 5 % of the run. Set before torch is imported.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

from nsfw_space import NSFWClassifier, Settings  # noqa: E402 - torch loads here, after the settings
from nsfw_space.tools.synthetic import build_model_dir, jpeg_bytes, varied_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The modules longest first (seconds each took in a whole run on 2 cores, AVX2-only EPYC,
# 2026-12-07; a simulation of the two workers: 670/658 s in the order before, 664/664 s in this): with `-n 2 --dist
# loadfile` (pyproject's addopts) a worker takes the next module when it is nearly done with its
# own, so the short ones fill in at the end. With only the first three ranked, test_trust.py (121 s)
# came last in alphabetical order and one worker ran it alone at the end.
LONGEST_FIRST = (
    "test_scale.py",  # 276
    "test_int8.py",  # 251
    "test_explain.py",  # 149
    "test_trust.py",  # 126
    "test_cli.py",  # 80
    "test_private.py",  # 72
    "test_desk.py",  # 67
    "test_browser.py",  # 55
    "test_policy.py",  # 54
    "test_space.py",  # 49
    "test_speed.py",  # 44
    "test_app.py",  # 27
    "test_training.py",  # 26
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny ViT (labels normal, nsfw) whose scores differ from image to image."""
    return build_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def classifier(model_dir) -> NSFWClassifier:
    """The tiny model in fp32, so it can be compared with the model card's snippets exactly."""
    return NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    """Six varied JPEGs of different sizes on disk."""
    folder = tmp_path_factory.mktemp("images")
    sizes = [(320, 240), (640, 480), (97, 211), (1024, 768), (224, 224), (50, 400)]
    paths = []
    for seed, size in enumerate(sizes):
        path = folder / f"img{seed}.jpg"
        varied_image(seed, size).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def gradio_tmp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gradio")
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def app_url(classifier, gradio_tmp):
    """The Space's page built around the tiny classifier, launched on 127.0.0.1."""
    from nsfw_space.space.demo import create_demo, launch_options

    # allow_private_urls is the test-only door for URL tests against servers started on 127.0.0.1
    settings = Settings(
        max_file_size="2MB",
        max_pixels=4_000_000,
        allow_private_urls=True,
        url_timeout=2.0,
        max_batch_files=10,
        max_request_pixels=12_000_000,
    )
    demo = create_demo(classifier, settings)
    options = launch_options(settings)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **options)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """JPEGs from small to phone-camera size, where draft-mode decoding kicks in."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for seed, size in enumerate([(640, 480), (1920, 1080), (3264, 2448), (4032, 3024), (300, 900)]):
        path = folder / f"photo{seed}.jpg"
        small = varied_image(40 + seed, (size[0] // 4, size[1] // 4))
        path.write_bytes(jpeg_bytes(small.resize(size), quality=90))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def card_scores(model_dir, photos):
    from tests.test_classifier import card_pipeline_scores

    return {str(path): card_pipeline_scores(model_dir, path)["nsfw"] for path in photos}
