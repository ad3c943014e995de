"""The fast paths: every one agrees with the model card's fp32 snippet; shared forward passes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from nsfw_space import InvalidImageError, NSFWClassifier
from nsfw_space.space.batching import DynamicBatcher


def test_card_scores_really_vary(card_scores):
    assert max(card_scores.values()) - min(card_scores.values()) > 0.2


@pytest.mark.parametrize(
    ("precision", "optimize"), [("fp32", "none"), ("fp32", "jit"), ("bf16", "none"), ("bf16", "jit")]
)
def test_fast_paths_stay_within_001_of_the_card(model_dir, photos, card_scores, precision, optimize):
    clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision=precision, optimize=optimize)
    assert clf.precision == precision and clf.optimization == optimize
    for path in photos:  # single images (the jit path) ...
        assert clf.predict(path).nsfw_score == pytest.approx(card_scores[str(path)], abs=0.01), path
    for prediction in clf.predict_batch(photos, batch_size=2):  # ... and batches, with draft decoding
        assert prediction.nsfw_score == pytest.approx(card_scores[prediction.source], abs=0.01)


@pytest.mark.slow
def test_torch_compile_path_stays_within_001_of_the_card(model_dir, photos, card_scores):
    clf = NSFWClassifier.from_pretrained(str(model_dir), precision="bf16", optimize="none")
    assert clf.optimize("compile", batch_size=4) == "compile"
    for prediction in clf.predict_batch(photos, batch_size=4):  # 4 + a padded 1
        assert prediction.nsfw_score == pytest.approx(card_scores[prediction.source], abs=0.01)


def test_auto_optimisation_is_jit_on_the_cpu(model_dir):
    assert NSFWClassifier.from_pretrained(str(model_dir), precision="fp32").optimization == "jit"


def test_large_jpeg_is_decoded_in_draft_mode(classifier, photos):
    frames = classifier.load(photos[3])  # 4032x3024 -> about twice the 224 px input
    assert frames[0].size == (1008, 756)
    assert Image.open(photos[3]).size == (4032, 3024)


class SlowClassifier(NSFWClassifier):
    """The tiny model with a forward pass slow enough for requests to pile up behind it."""

    def probabilities(self, pixels):
        time.sleep(0.15)
        return super().probabilities(pixels)


def test_concurrent_requests_share_forward_passes_and_keep_their_own_results(classifier, photos):
    slow = SlowClassifier(classifier.model, classifier.processor)
    batcher = DynamicBatcher(slow, max_batch_size=8)
    sources = [photos[i % len(photos)] for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(batcher.predict, sources))
    assert max(batcher.batch_sizes) > 1 and len(batcher.batch_sizes) < len(sources)
    assert max(batcher.batch_sizes) <= 8
    for source, prediction in zip(sources, results, strict=True):
        assert prediction.nsfw_score == pytest.approx(classifier.predict(source).nsfw_score, abs=1e-5)


def test_a_bad_file_fails_only_its_own_request_in_a_shared_pass(classifier, photos):
    slow = SlowClassifier(classifier.model, classifier.processor)
    batcher = DynamicBatcher(slow, max_batch_size=8)
    sources = [photos[0], b"not an image", photos[1], photos[2]]
    outcomes = []
    lock = threading.Lock()

    def call(source):
        try:
            result = batcher.predict(source)
        except InvalidImageError as err:
            result = err
        with lock:
            outcomes.append((source, result))

    threads = [threading.Thread(target=call, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [result for source, result in outcomes if isinstance(result, InvalidImageError)]
    assert len(errors) == 1 and len(outcomes) == 4


def test_concurrent_api_calls_with_one_bad_file(client, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    files = [images[0], images[1], bad, images[2], images[3]]
    jobs = [client.submit(handle_file(str(path)), api_name="/classify") for path in files]
    for path, job in zip(files, jobs, strict=True):
        if path == bad:
            with pytest.raises(AppError):
                job.result(timeout=60)
        else:
            assert {item["label"] for item in job.result(timeout=60)["confidences"]} == {"normal", "nsfw"}


def test_model_work_runs_on_one_thread_whoever_calls_and_explanations_on_passing_ones(
    model_dir, images, monkeypatch
):
    """One lasting OpenMP pool per process (nsfw_space.model.torch_thread): loading and every
    forward run on the torch thread, from the main thread, a pool's threads or the Space's
    batcher; an explanation runs on a thread that ends with it; errors reach their caller."""
    from nsfw_space.model import classifier as classifier_module
    from nsfw_space.model.explain import Explainer
    from nsfw_space.model.torch_thread import NAME

    seen: dict[str, list[threading.Thread]] = {"load": [], "forward": [], "explain": []}

    def recorded(kind, original):
        def wrapper(*args, **kwargs):
            seen[kind].append(threading.current_thread())
            return original(*args, **kwargs)

        return wrapper

    load = classifier_module.load_model_and_processor
    monkeypatch.setattr(classifier_module, "load_model_and_processor", recorded("load", load))
    monkeypatch.setattr(Explainer, "_maps", recorded("explain", Explainer._maps))

    clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32")
    plan = clf._runner.plan  # the served forwards, single and batch, each recording its thread
    clf._runner.plan = replace(
        plan, single=recorded("forward", plan.single), batch=recorded("forward", plan.batch)
    )
    expected = clf.predict(images[0]).scores  # from the main thread
    with ThreadPoolExecutor(3) as pool:
        from_pool = list(pool.map(lambda path: clf.predict(path).scores, images[:3]))
    batched = DynamicBatcher(clf, 4).predict(str(images[0])).scores
    clf.predict_batch(images[:4])
    explanation = clf.explain(images[1])

    assert [thread.name for thread in seen["load"]] == [NAME]
    assert len(seen["forward"]) >= 6 and {thread.name for thread in seen["forward"]} == {NAME}
    assert len({id(thread) for thread in seen["forward"] + seen["load"]}) == 1  # one thread
    assert from_pool[0] == expected and batched == expected
    assert explanation.heatmap.shape and seen["explain"][0].name.startswith(NAME + "-passing")
    seen["explain"][0].join(timeout=5)
    assert not seen["explain"][0].is_alive()  # its OpenMP pool went with it
    with pytest.raises(RuntimeError):  # the wrong shape, raised in the caller's thread
        clf.probabilities(np.zeros((1, 3, 7, 7), dtype=np.float32))
    assert clf.predict(images[0]).scores == expected  # and the torch thread serves on


def test_a_client_given_one_tls_context_gets_the_same_answers_and_loads_no_certificates_per_call(
    client, app_url, images, monkeypatch
):
    """docs/api.md's faster client, as written there: the same answers, and no CA bundle read per
    request (each read 22 to 32 ms of CPU on the 2-core EPYC of docs/speed.md, three per call)."""
    import ssl

    import httpx
    from gradio_client import Client

    loads = []
    original = ssl.SSLContext.load_verify_locations

    def counted(self, *args, **kwargs):
        loads.append(args or kwargs)
        return original(self, *args, **kwargs)

    shared = Client(app_url, verbose=False, ssl_verify=httpx.create_ssl_context())
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    expected = client.predict(handle_file(str(images[0])), api_name="/classify")
    per_call = len(loads)
    loads.clear()
    got = [shared.predict(handle_file(str(path)), api_name="/classify") for path in images[:3]]
    assert per_call >= 2  # the client as it comes: at least the upload's and the call's
    assert loads == []
    assert got[0] == expected
    assert all({item["label"] for item in answer["confidences"]} == {"normal", "nsfw"} for answer in got)


@pytest.mark.slow
def test_bench_command_prints_the_side_by_side_comparison(model_dir, tmp_path):
    from tests.test_cli import run_cli

    # fp32: the table's layout and the scores' agreement are what is checked here; with auto the
    # command first builds int8 for the tiny model (30 to 40 s), as test_int8.py's tests do
    result = run_cli(
        "bench",
        "--precision",
        "fp32",
        "--model",
        str(model_dir),
        "--images",
        "6",
        "--rounds",
        "1",
        "--batch-size",
        "4",
        "--workdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    card = next(line for line in lines if line.startswith("model card pipeline"))
    ours = next(line for line in lines if line.startswith("nsfw_space predict_batch"))
    assert float(card.split()[-5]) > 0 and float(ours.split()[-5]) > 0  # images/s of each
    assert float(ours.split()[-2]) <= 0.01  # largest score difference from the card
    assert any(line.startswith("max |diff|") for line in lines)
    timed = next(line for line in lines if "files to scores" in line)  # names the model it timed
    assert timed.endswith("vit: 2 layers, hidden size 32, patch 16, 224 px"), timed
    machine = next(line for line in lines if line.startswith("machine: "))  # a figure names its CPU
    assert all(flag in machine for flag in ("cores", "AVX2", "AVX512-BF16", "AVX512-VNNI", "AMX", "torch"))
