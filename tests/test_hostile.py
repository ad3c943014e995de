"""Hostile and odd inputs: each gets a right answer or a clear refusal, through Python and the API."""

from __future__ import annotations

import io

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nsfw_space import InvalidImageError, NSFWClassifier
from nsfw_space.media.images import load_frames
from tests.corpus import readable_files, refused_files

READABLE = readable_files()
REFUSED = refused_files()
APP_MAX_PIXELS = 4_000_000  # the app fixture's cap (see conftest)


@pytest.fixture(scope="module")
def capped(classifier) -> NSFWClassifier:
    """The tiny classifier with the same limits as the app fixture."""
    return NSFWClassifier(
        classifier.model, classifier.processor, max_pixels=APP_MAX_PIXELS, max_bytes=2 * 2**20
    )


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name, data in READABLE.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in REFUSED.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_file_is_classified(capped, name):
    prediction = capped.predict(READABLE[name])
    assert set(prediction.scores) == {"normal", "nsfw"}
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= prediction.nsfw_score <= 1.0


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_file_is_refused_with_a_reason(capped, name):
    data, phrase = REFUSED[name]
    with pytest.raises(InvalidImageError) as caught:
        capped.predict(data)
    message = str(caught.value)
    assert phrase.lower() in message.lower(), message
    assert message.endswith(".") and "Traceback" not in message


def test_animated_files_are_judged_on_several_frames(capped):
    for name in ("animated.gif", "animated.webp"):
        prediction = capped.predict(READABLE[name])
        assert prediction.frame_scores is not None and len(prediction.frame_scores) == 5
        assert prediction.nsfw_score == pytest.approx(max(prediction.frame_scores))


def test_recoverable_truncated_jpeg_is_classified_close_to_the_whole(capped):
    picture = Image.open(io.BytesIO(READABLE["photo.jpg"]))
    whole = capped.predict(picture).nsfw_score
    assert capped.predict(READABLE["no-end-marker.jpg"]).nsfw_score == pytest.approx(whole, abs=1e-3)


def test_upload_over_the_size_cap_is_refused(capped):
    with pytest.raises(InvalidImageError, match="the limit is 2 MB"):
        capped.predict(b"\xff\xd8" + b"\x00" * (3 * 2**20))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_api_refuses_bad_file_with_the_same_sentence(client, corpus_dir, name):
    _, phrase = REFUSED[name]
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(corpus_dir / name)), 0.5, api_name="/moderate")
    assert phrase.lower() in str(caught.value).lower()
    assert "the app has raised an exception" not in str(caught.value).lower()


def test_api_classifies_every_readable_file_and_keeps_serving(client, corpus_dir, capped):
    for name in sorted(READABLE):
        result = client.predict(handle_file(str(corpus_dir / name)), 0.5, api_name="/moderate")
        expected = capped.predict(READABLE[name]).nsfw_score
        assert result["nsfw_score"] == pytest.approx(expected, abs=1e-4), name


def test_api_upload_over_max_file_size_is_refused(client, app_url, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (3 * 2**20))
    with pytest.raises(ValueError, match="maximum file size"):
        client.predict(handle_file(str(big)), api_name="/classify")
    with big.open("rb") as handle:  # past the client's own check, straight to the server
        response = httpx.post(f"{app_url}gradio_api/upload", files={"files": handle}, timeout=30)
    assert response.status_code == 413
    assert "too large" in response.text.lower() or "maximum" in response.text.lower()


def test_api_never_reads_server_files_it_was_not_sent(app_url):
    payload = {"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]}
    started = httpx.post(f"{app_url}gradio_api/call/classify", json=payload, timeout=30).json()
    stream = httpx.get(f"{app_url}gradio_api/call/classify/{started['event_id']}", timeout=30).text
    assert "event: error" in stream and "root:" not in stream


_SEEDS = [
    READABLE[name] for name in ("photo.jpg", "mode-RGBA.png", "animated.gif", "photo.webp", "photo.bmp")
]
_SEEDS += [READABLE[name] for name in ("photo.tiff", "icon.ico")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_raise_only_invalid_image_error(data):
    try:
        frames = load_frames(data, 4, max_pixels=APP_MAX_PIXELS)
    except InvalidImageError:
        return
    assert frames and all(frame.mode == "RGB" for frame in frames)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=12),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_images_raise_only_invalid_image_error(seed, edits, cut):
    data = bytearray(seed)
    for where, value in edits:
        data[min(len(data) - 1, int(where * len(data)))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    try:
        frames = load_frames(bytes(data), 4, max_pixels=APP_MAX_PIXELS)
    except InvalidImageError:
        return
    assert frames and all(frame.mode == "RGB" for frame in frames)


def test_nothing_about_an_upload_is_logged(client, images, tmp_path, caplog):
    import logging
    import shutil

    secret = tmp_path / "my-private-holiday-photo.jpg"
    shutil.copy(images[1], secret)
    with caplog.at_level(logging.DEBUG):
        result = client.predict(handle_file(str(secret)), 0.5, api_name="/moderate")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "my-private-holiday-photo" not in logged
    assert str(result["nsfw_score"]) not in logged and str(round(result["nsfw_score"], 4)) not in logged


def test_uploads_are_deleted_on_a_schedule_and_nothing_is_flagged(classifier):
    from nsfw_space import Settings
    from nsfw_space.space.demo import create_demo, launch_options

    settings = Settings(cache_minutes=10)
    demo = create_demo(classifier, settings)
    assert demo.delete_cache == (300, 600)
    assert launch_options(settings)["run_history"] is False
    assert not [block for block in demo.blocks.values() if "flag" in type(block).__name__.lower()]
