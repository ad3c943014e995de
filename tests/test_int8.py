"""int8: built aside while the plain forward serves, checked against fp32, cached on disk, swapped in
whole; refused when it strays; ``auto`` follows what was measured on this CPU."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from nsfw_space import NSFWClassifier, Settings
from nsfw_space.errors import ConfigError
from nsfw_space.model import device as device_module
from nsfw_space.model import quantize

pytestmark = pytest.mark.skipif(
    quantize.missing_requirement() is not None, reason="int8 needs torchao and g++"
)


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def built(model_dir, int8_cache, photos):
    """The first int8 classifier: it serves fp32 at once and builds int8 aside. Returns it with
    the predictions made while the build ran and the seconds from_pretrained took."""
    started = time.perf_counter()
    clf = NSFWClassifier.from_pretrained(
        str(model_dir), device="cpu", precision="int8", cache_dir=str(int8_cache)
    )
    load_seconds = time.perf_counter() - started
    served_while_building: list[tuple[str, float]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            prediction = clf.predict(photos[0])
            served_while_building.append((clf.precision, prediction.nsfw_score))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        assert clf.wait_until_ready(600)
    finally:
        stop.set()
        asker.join()
    return clf, served_while_building, load_seconds


def test_int8_serves_fp32_at_once_then_swaps_in_the_checked_package(built, card_scores, photos):
    clf, served, load_seconds = built
    assert load_seconds < 20  # the build did not hold up loading
    assert served and served[0][0] == "fp32"  # requests were answered while int8 was being built
    expected = card_scores[str(photos[0])]
    assert all(score == pytest.approx(expected, abs=0.01) for _, score in served)
    assert clf.precision == "int8" and clf.optimization == "int8"
    for path in photos:  # single images and batches, within 0.01 of the card's fp32 snippet
        assert clf.predict(path).nsfw_score == pytest.approx(card_scores[str(path)], abs=0.01)
    for prediction in clf.predict_batch(photos, batch_size=2):
        assert prediction.nsfw_score == pytest.approx(card_scores[prediction.source], abs=0.01)


def test_int8_serving_is_explained_on_an_fp32_copy(built, classifier, photos):
    """The int8 forward has no gradients: the map comes from the fp32 copy (the same map the
    fp32 classifier gives), the prediction from the int8 model as served."""
    clf, _, _ = built
    assert clf.precision == "int8"
    explanation = clf.explain(photos[0])
    assert explanation.prediction.nsfw_score == pytest.approx(clf.predict(photos[0]).nsfw_score, abs=1e-6)
    assert explanation.grid == pytest.approx(classifier.explain(photos[0]).grid, abs=1e-4)
    assert clf.precision == "int8"  # explaining did not change what serves


def test_the_package_is_cached_and_a_restart_loads_it_without_building(built, model_dir, int8_cache, caplog):
    folders = list((int8_cache / "int8").iterdir())
    assert len(folders) == 1 and {p.name for p in folders[0].iterdir()} == {"model.pt2", "meta.json"}
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["max_difference"] <= 0.01 and meta["int8_images_per_s"] > 0 and meta["plain_images_per_s"] > 0
    caplog.set_level(logging.INFO, logger="nsfw_space")
    started = time.perf_counter()
    again = NSFWClassifier.from_pretrained(
        str(model_dir), device="cpu", precision="int8", cache_dir=str(int8_cache)
    )
    assert time.perf_counter() - started < 15
    assert again.precision == "int8"  # in use before the first request: no warm-up
    assert again.wait_until_ready(0)  # nothing is being built
    assert "building int8" not in caplog.text


def test_a_cached_package_that_strays_from_fp32_is_refused_and_removed(built, model_dir, int8_cache, caplog):
    folder = next((int8_cache / "int8").iterdir())
    saved = (folder / "meta.json").read_text()
    meta = json.loads(saved)
    meta["reference"] = [[row[1], row[0]] for row in meta["reference"]]  # fp32 scores that disagree
    (folder / "meta.json").write_text(json.dumps(meta))
    model_copy = folder.parent / "kept.pt2"
    model_copy.write_bytes((folder / "model.pt2").read_bytes())
    caplog.set_level(logging.WARNING, logger="nsfw_space")
    clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32")
    assert clf.use_int8(cache_dir=int8_cache, build="never") == "not built"
    assert clf.precision == "fp32"
    assert "not used" in caplog.text and "differ from fp32" in caplog.text
    assert not folder.exists()  # removed, so the next start rebuilds it
    folder.mkdir()  # put it back for the other tests
    model_copy.rename(folder / "model.pt2")
    (folder / "meta.json").write_text(saved)


def test_a_build_that_strays_from_fp32_is_not_used(model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(quantize, "TOLERANCE", 1e-9)  # no int8 can be this close: the check refuses it
    caplog.set_level(logging.WARNING, logger="nsfw_space")
    clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32")
    assert clf.use_int8(cache_dir=tmp_path, build="now") != "int8"
    assert clf.precision == "fp32" and clf.optimization == "jit"
    assert "differ from fp32" in caplog.text
    assert not (tmp_path / "int8").exists() or not any((tmp_path / "int8").iterdir())  # nothing kept


@pytest.mark.parametrize(("int8_rate", "expected"), [(1e6, "int8"), (1e-6, "fp32")])
def test_auto_follows_what_was_measured_on_this_cpu(
    built, model_dir, int8_cache, monkeypatch, int8_rate, expected
):
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: False)  # auto starts from fp32
    folder = next((int8_cache / "int8").iterdir())
    saved = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(json.dumps({**json.loads(saved), "int8_images_per_s": int8_rate}))
    try:
        clf = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", cache_dir=str(int8_cache))
        assert clf.precision == expected
        assert clf.wait_until_ready(0)  # measured before: nothing is built again
    finally:
        (folder / "meta.json").write_text(saved)


def test_auto_with_no_speed_ups_builds_nothing(model_dir, tmp_path):
    clf = NSFWClassifier.from_pretrained(
        str(model_dir), device="cpu", optimize="none", cache_dir=str(tmp_path)
    )
    assert clf.wait_until_ready(0) and not (tmp_path / "int8").exists()


def test_int8_is_a_precision_everywhere_and_cpu_only(monkeypatch):
    monkeypatch.setenv("NSFW_SPACE_PRECISION", "int8")
    assert Settings.from_env().precision == "int8"
    with pytest.raises(ConfigError, match="int8 runs on the CPU"):
        device_module.resolve_precision("int8", device_module.torch.device("cuda"))
    from nsfw_space.cli import build_parser

    assert build_parser().parse_args(["scan", "x", "--precision", "int8"]).precision == "int8"
