"""Bulk moderation: the batch endpoint, GIF/video frames, URL input with its SSRF guard, MCP."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from nsfw_space import InvalidImageError, NSFWClassifier, Settings
from nsfw_space.media.fetch import fetch_image_bytes
from nsfw_space.model.rules import summarise
from nsfw_space.space.render import thumbnail
from nsfw_space.tools.synthetic import varied_image, write_video
from tests.helpers import launched


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    frames = [varied_image(seed, (160, 120)) for seed in range(20)]
    gif = folder / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:10], duration=100, loop=0)
    return {
        "gif": gif,
        "mp4": write_video(folder / "clip.mp4", frames, fps=10, codec="mpeg4"),
        "webm": write_video(folder / "clip.webm", frames, fps=10, codec="libvpx-vp9"),
        "frames": frames,
    }


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/big.jpg":
            self.send_response(200)
            self.send_header("Content-Length", str(3 * 2**20))
            self.end_headers()
            self.wfile.write(b"\xff" * (3 * 2**20))
        elif self.path == "/slow.jpg":
            time.sleep(4)
            self.send_response(200)
            self.end_headers()
        elif self.path.startswith("/hop/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.split("/hop/", 1)[1])
            self.end_headers()
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server(images):
    """A web server on 127.0.0.1 serving the test images (and some misbehaving routes)."""
    folder = images[0].parent
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_batch_endpoint_returns_one_row_per_file_in_order(client, classifier, images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    files = [images[0], bad, images[1], images[2]]
    rows = client.predict([handle_file(str(p)) for p in files], 0.5, None, api_name="/moderate_batch")
    assert [row["file"] for row in rows] == [p.name for p in files]
    assert rows[1]["error"] and rows[1]["label"] is None
    for path, row in zip(files, rows, strict=True):
        if path == bad:
            continue
        assert row["error"] == ""
        assert row["nsfw_score"] == pytest.approx(classifier.predict(path).nsfw_score, abs=1e-4)
        assert row["is_nsfw"] is (row["nsfw_score"] >= 0.5)


def test_batch_endpoint_refuses_more_files_than_the_limit(client, images):
    files = [handle_file(str(images[i % len(images)])) for i in range(11)]
    with pytest.raises(AppError, match="at most 10"):
        client.predict(files, 0.5, None, api_name="/moderate_batch")


def test_batch_endpoint_takes_urls_too(client, classifier, images, image_server):
    urls = f"{image_server}/{images[0].name}\n{image_server}/missing.jpg\n"
    rows = client.predict([handle_file(str(images[1]))], 0.5, urls, api_name="/moderate_batch")
    assert len(rows) == 3
    assert rows[0]["file"] == images[1].name
    assert rows[1]["nsfw_score"] == pytest.approx(classifier.predict(images[0]).nsfw_score, abs=1e-4)
    assert "HTTP 404" in rows[2]["error"]


@pytest.mark.parametrize("kind", ["gif", "mp4", "webm"])
def test_frames_endpoint_samples_evenly_and_applies_each_rule(client, media, kind):
    path = handle_file(str(media[kind]))
    results = {
        rule: client.predict(path, 0.5, rule, 3, 6, api_name="/moderate_frames")
        for rule in ("max", "mean", "k-of-n")
    }
    scores = results["max"]["frame_scores"]
    times = results["max"]["frame_times"]
    assert len(scores) == 6 and times == sorted(times) and times[0] == 0.0
    assert max(scores) - min(scores) > 0.05  # the frames differ, so the rules do too
    assert results["max"]["nsfw_score"] == pytest.approx(max(scores), abs=1e-5)
    assert results["mean"]["nsfw_score"] == pytest.approx(float(np.mean(scores)), abs=1e-5)
    assert results["k-of-n"]["nsfw_score"] == pytest.approx(sorted(scores, reverse=True)[2], abs=1e-5)
    for rule, result in results.items():
        assert result["rule"] == rule and result["is_nsfw"] is (result["nsfw_score"] >= 0.5)


def test_video_frames_match_the_frames_themselves(classifier, media):
    prediction = classifier.with_limits(frames=20).predict(media["mp4"])
    assert prediction.frame_times == pytest.approx([i / 10 for i in range(20)], abs=1e-6)
    direct = [classifier.predict(frame).nsfw_score for frame in media["frames"]]
    assert np.corrcoef(prediction.frame_scores, direct)[0, 1] > 0.9  # lossy video, same story


def test_k_of_n_means_at_least_k_frames_reach_the_threshold():
    scores = [0.1, 0.9, 0.7, 0.2, 0.95]
    for k in range(1, 9):
        summary = summarise(scores, "k-of-n", k)
        needed = min(k, len(scores))  # fewer frames than k: all of them must reach it
        assert summary.k == needed
        for threshold in (0.05, 0.15, 0.5, 0.8, 0.92):
            assert (summary.score >= threshold) == (sum(s >= threshold for s in scores) >= needed)


def test_moderate_takes_a_url(client, classifier, images, image_server):
    result = client.predict(None, 0.5, f"{image_server}/{images[2].name}", api_name="/moderate")
    assert result["nsfw_score"] == pytest.approx(classifier.predict(images[2]).nsfw_score, abs=1e-4)
    redirected = client.predict(None, 0.5, f"{image_server}/hop/{images[2].name}", api_name="/moderate")
    assert redirected["nsfw_score"] == result["nsfw_score"]


@pytest.mark.parametrize(
    ("route", "phrase"),
    [("/to-file", "Only http"), ("/big.jpg", "the limit is 2 MB"), ("/slow.jpg", "did not answer within")],
)
def test_misbehaving_urls_are_refused_clearly(client, image_server, route, phrase):
    with pytest.raises(AppError, match=phrase):
        client.predict(None, 0.5, image_server + route, api_name="/moderate")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "gopher://127.0.0.1/",
        "http://127.0.0.1/a.jpg",
        "http://localhost/a.jpg",
        "http://[::1]/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://0.0.0.0/a.jpg",
    ],
)
def test_ssrf_guard_refuses_before_connecting(url):
    with pytest.raises(InvalidImageError, match=r"Only http|private, loopback or link-local"):
        fetch_image_bytes(url, max_bytes=2**20, timeout=1)


def test_url_fetches_share_one_tls_context_instead_of_reading_certificates_each_time(
    images, image_server, monkeypatch
):
    """Each new httpx client reads the CA bundle (about 20 ms of CPU on the 2-core EPYC of
    docs/speed.md); the fetcher builds its context once, for every fetch and redirect."""
    import ssl

    loads = []
    original = ssl.SSLContext.load_verify_locations

    def counted(self, *args, **kwargs):
        loads.append(args or kwargs)
        return original(self, *args, **kwargs)

    fetch_image_bytes(f"{image_server}/{images[0].name}", max_bytes=2**22, allow_private=True)
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    httpx.Client().close()  # what each fetch cost before: one read of the bundle per client
    assert len(loads) == 1
    loads.clear()
    for path in images[:3]:
        body = fetch_image_bytes(f"{image_server}/{path.name}", max_bytes=2**22, allow_private=True)
        assert body == path.read_bytes()
    redirected = fetch_image_bytes(
        f"{image_server}/hop/{images[2].name}", max_bytes=2**22, allow_private=True
    )
    assert redirected == images[2].read_bytes()
    assert loads == []


@pytest.fixture(scope="module")
def default_app(classifier, gradio_tmp):
    """The Space with default URL settings (no private addresses) and the MCP server on."""
    with launched(classifier, Settings(mcp=True)) as url:
        yield url


def test_space_refuses_loopback_urls_by_default(default_app, image_server, images):
    client = Client(default_app, verbose=False)
    with pytest.raises(AppError, match="private, loopback or link-local"):
        client.predict(None, 0.5, f"{image_server}/{images[0].name}", api_name="/moderate")


def test_mcp_tools_are_described_by_the_docstrings(default_app):
    tools = {
        tool["name"]: tool for tool in httpx.get(f"{default_app}gradio_api/mcp/schema", timeout=30).json()
    }
    assert {"classify", "moderate", "moderate_batch", "moderate_frames", "explain"} <= set(tools)
    assert tools["moderate"]["description"].startswith("Moderate one image")
    assert tools["explain"]["description"].startswith("Explain one image's score")
    assert "k-of-n" in str(tools["moderate_frames"]["inputSchema"]) or "rule" in str(tools["moderate_frames"])


def test_flagged_thumbnails_are_blurred_beyond_recognition(images):
    sharp = np.asarray(thumbnail(str(images[3])), dtype=float)
    blurred = np.asarray(thumbnail(str(images[3]), blur=True), dtype=float)
    detail = lambda a: np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert detail(blurred) < detail(sharp) / 4


def test_scan_gives_gifs_and_videos_their_aggregated_score(model_dir, media, tmp_path):
    import csv

    from tests.test_cli import run_cli

    output = tmp_path / "media.csv"
    folder = Path(media["mp4"]).parent
    result = run_cli(
        "scan", str(folder), "-m", str(model_dir), "-o", str(output), "-q", "--frame-rule", "mean"
    )
    assert result.returncode == 0, result.stderr
    rows = {Path(row["path"]).name: row for row in csv.DictReader(output.open())}
    assert set(rows) == {"clip.gif", "clip.mp4", "clip.webm"}
    clf = NSFWClassifier.from_pretrained(str(model_dir), optimize="none")
    for name, row in rows.items():
        expected = clf.predict(folder / name, rule="mean").nsfw_score
        assert float(row["nsfw_score"]) == pytest.approx(expected, abs=0.01), name
