"""The Space through the doors its users use: gradio_client on /classify and /moderate, and app.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import ROOT
from tests.test_classifier import card_pipeline_scores


def test_named_endpoints_are_classify_and_moderate(client):
    api = client.view_api(print_info=False, return_format="dict")
    named = {
        "/classify",
        "/moderate",
        "/moderate_batch",
        "/moderate_frames",
        "/explain",
    }  # /explain: issue 13
    assert set(api["named_endpoints"]) == named
    assert not api["unnamed_endpoints"]
    moderate = api["named_endpoints"]["/moderate"]
    assert [p["parameter_name"] for p in moderate["parameters"]] == ["image", "threshold", "url"]
    # image and threshold stay the first two; url is optional, so (image, threshold) calls keep working
    assert [p["parameter_has_default"] for p in moderate["parameters"]][1:] == [True, True]
    explain = api["named_endpoints"]["/explain"]
    assert [p["parameter_name"] for p in explain["parameters"]] == [
        "image",
        "threshold",
        "level",
        "strength",
        "url",
    ]
    assert [p["parameter_has_default"] for p in explain["parameters"]][1:] == [True] * 4
    assert len(explain["returns"]) == 3  # overlay, redacted copy, JSON


def test_classify_returns_gradios_label_dict_with_the_cards_scores(client, model_dir, images):
    for path in images[:3]:
        result = client.predict(handle_file(str(path)), api_name="/classify")
        confidences = {item["label"]: item["confidence"] for item in result["confidences"]}
        card = card_pipeline_scores(model_dir, path)
        assert set(confidences) == {"normal", "nsfw"}
        assert result["label"] == max(card, key=card.get)
        for label, value in card.items():
            assert confidences[label] == pytest.approx(value, abs=0.01)


def test_moderate_returns_the_json_verdict(client, classifier, images):
    path = images[2]
    expected = classifier.predict(path)
    for threshold in (0.0, 1.0, round(expected.nsfw_score, 2)):
        result = client.predict(handle_file(str(path)), threshold, api_name="/moderate")
        keys = {"label", "scores", "nsfw_score", "is_nsfw", "threshold", "decision", "review_threshold"}
        assert set(result) == keys  # the first five as before; a decision added (issue 14)
        assert result["threshold"] == threshold == result["review_threshold"]  # no policy: one threshold
        assert result["decision"] == ("block" if result["is_nsfw"] else "allow")
        assert result["nsfw_score"] == pytest.approx(expected.nsfw_score, abs=1e-4)
        assert result["is_nsfw"] is (result["nsfw_score"] >= threshold)
        assert result["label"] == expected.label


def test_a_text_file_gets_a_clear_message_and_the_server_keeps_serving(client, tmp_path, images):
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are my notes, not a picture")
    with pytest.raises(AppError, match="text file, not an image"):
        client.predict(handle_file(str(bad)), api_name="/classify")
    with pytest.raises(AppError, match="text file, not an image"):
        client.predict(handle_file(str(bad)), 0.5, api_name="/moderate")
    assert "confidences" in client.predict(handle_file(str(images[0])), api_name="/classify")


def test_a_threshold_outside_0_1_is_refused(client, images):
    with pytest.raises(AppError, match="between 0 and 1"):
        client.predict(handle_file(str(images[0])), 3, api_name="/moderate")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_app_py_starts_on_the_configured_port_and_serves(model_dir, images, tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        NSFW_SPACE_MODEL=str(model_dir),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_TEMP_DIR=str(tmp_path),
    )
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = _wait_for_client(f"http://127.0.0.1:{port}/", process)
        result = client.predict(handle_file(str(images[0])), api_name="/classify")
        assert {item["label"] for item in result["confidences"]} == {"normal", "nsfw"}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert "Traceback" not in output


@pytest.mark.slow
def test_app_py_with_a_missing_model_says_what_to_set(tmp_path):
    env = dict(os.environ, NSFW_SPACE_MODEL=str(tmp_path / "nowhere"), GRADIO_SERVER_PORT=str(_free_port()))
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "NSFW_SPACE_MODEL" in result.stderr and str(tmp_path / "nowhere") in result.stderr
    assert "Traceback" not in result.stderr


def _wait_for_client(url: str, process: subprocess.Popen, timeout: float = 90) -> Client:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app.py exited early:\n{process.stdout.read()}")
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - the server is not up yet
            time.sleep(0.5)
    raise AssertionError("app.py did not start in time")
