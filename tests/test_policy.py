"""A moderation policy: block and review thresholds chosen on labelled scores, a ``decision`` on
every answer (API, page, scan), ``NSFW_SPACE_POLICY``, and flagged segments of videos."""

from __future__ import annotations

import csv
import io
import json
from itertools import pairwise

import pytest
from gradio_client import Client, handle_file

from nsfw_space.errors import ConfigError
from nsfw_space.model.policy import Policy, PolicyError, calibrate
from nsfw_space.model.prediction import Prediction
from nsfw_space.model.rules import flagged_segments
from nsfw_space.tools.synthetic import varied_image, write_video
from tests.helpers import start_app
from tests.test_cli import run_cli

# Scores whose thresholds are worked out by hand below.
NORMAL = [0.1] * 50 + [0.5] * 3 + [0.8] * 1
NSFW = [0.3] * 5 + [0.6] * 20 + [0.9] * 75


def test_thresholds_are_the_ones_worked_out_by_hand():
    # block, lowest threshold with precision >= 0.99: at 0.6 it is 95/96 = 0.9896, at 0.8 75/76,
    # at 0.9 75/75. review, highest threshold with recall >= 0.95: 0.9 catches 75/100, 0.6 95/100.
    result = calibrate(
        NORMAL + NSFW, [False] * len(NORMAL) + [True] * len(NSFW), block_precision=0.99, review_recall=0.95
    )
    assert (result.policy.block, result.policy.review) == (0.9, 0.6)
    assert result.block_counts == {
        "true_positives": 75,
        "false_positives": 0,
        "false_negatives": 25,
        "true_negatives": 54,
    }
    assert result.review_counts == {
        "true_positives": 95,
        "false_positives": 1,
        "false_negatives": 5,
        "true_negatives": 53,
    }
    # 75 blocked images cannot show precision 0.99 (rule of three: 3 / 0.01 = 300 needed); 100 nsfw
    # images are enough to show recall 0.95 (3 / 0.05 = 60)
    assert len(result.warnings) == 1 and "at least 300" in result.warnings[0]
    assert result.policy.data["images"] == 154 and result.policy.data["nsfw"] == 100


def test_a_precision_no_threshold_reaches_means_never_block_without_a_person():
    result = calibrate([0.9, 0.9, 0.1], [True, False, False], block_precision=0.99, review_recall=0.5)
    assert result.policy.block == 1.0 and result.policy.review == 0.9
    assert any("No threshold reaches precision" in warning for warning in result.warnings)


def test_calibration_refuses_data_it_cannot_use():
    with pytest.raises(ValueError, match="both kinds"):
        calibrate([0.2, 0.3], [False, False])
    with pytest.raises(ValueError, match="between 0 and 1"):
        calibrate([0.2, 0.3], [False, True], block_precision=1.0)


def test_policy_json_round_trips_and_bad_files_get_one_sentence(tmp_path):
    policy = calibrate(NORMAL + NSFW, [False] * 54 + [True] * 100, model="m", revision="abc").policy
    assert Policy.load(policy.save(tmp_path / "policy.json")) == policy
    for text, message in [
        ("{", "is not JSON"),
        ("[1, 2]", "at least 'block' and 'review'"),
        ('{"block": 0.5, "review": 0.7}', "must not be above its block"),
        ('{"block": "high", "review": 0.1}', "number from 0 to 1"),
        ('{"block": 0.5, "review": 0.1, "data": 3}', "'data' must be an object"),
    ]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(PolicyError, match=message):
            Policy.load(tmp_path / "bad.json")
    with pytest.raises(PolicyError, match="Could not read"):
        Policy.load(tmp_path / "missing.json")
    assert issubclass(PolicyError, ConfigError)


def test_decisions_and_a_callers_threshold():
    policy = Policy(block=0.8, review=0.4)
    assert [policy.decide(s) for s in (0.1, 0.4, 0.79, 0.8, 1.0)] == [
        "allow",
        "review",
        "review",
        "block",
        "block",
    ]
    assert policy.at(0.3) == Policy(block=0.3, review=0.3)  # review follows the block threshold down
    assert policy.at(0.9).review == 0.4
    assert Policy.single(0.5).at(0.7) == Policy.single(0.7)  # a single threshold never grows a band
    answer = Prediction(scores={"normal": 0.4, "nsfw": 0.6}, nsfw_score=0.6).to_dict(0.5)
    assert answer["decision"] == "block" and answer["review_threshold"] == 0.5 and answer["is_nsfw"]


def _recomputed(answer):
    """The decision a reader works out from the numbers in the answer itself."""
    if answer["nsfw_score"] >= answer["threshold"]:
        return "block"
    return "review" if answer["nsfw_score"] >= answer["review_threshold"] else "allow"


def test_a_decision_follows_from_the_numbers_printed_beside_it(tmp_path, client, images):
    """One rounding rule (6 digits) for scores and thresholds: eval's policy threshold of
    0.6275243163108826 is kept as 0.627524, and every decision at that boundary can be worked out
    from the answer's own nsfw_score, threshold and review_threshold."""
    path = Policy(block=0.9, review=0.6275243163108826).save(tmp_path / "policy.json")
    assert json.loads(path.read_text())["review"] == 0.627524
    policy = Policy.load(path)
    assert policy.review == 0.627524
    decisions = set()
    for score in (0.62752432, 0.62752449, 0.6275245, 0.6275235, 0.62752349, 0.627523, 0.9, 0.8999996):
        answer = Prediction(scores={"normal": 1 - score, "nsfw": score}, nsfw_score=score).to_dict(
            policy.block, policy.review
        )
        assert answer["decision"] == _recomputed(answer), answer
        assert answer["is_nsfw"] == (answer["nsfw_score"] >= answer["threshold"])
        decisions.add(answer["decision"])
    assert decisions == {"allow", "review", "block"}
    # through the API: a caller's threshold a hair above the image's own score
    score = client.predict(handle_file(str(images[0])), api_name="/moderate")["nsfw_score"]
    for nudge in (-6e-7, -4e-7, 0.0, 4e-7, 6e-7):
        threshold = min(1.0, max(0.0, score + nudge))
        answer = client.predict(handle_file(str(images[0])), threshold, api_name="/moderate")
        assert answer["threshold"] == round(threshold, 6)
        assert answer["decision"] == _recomputed(answer), (nudge, answer)


def test_without_a_policy_the_api_answers_as_before_plus_a_matching_decision(client, images):
    for threshold in (0.0, 1.0):
        result = client.predict(handle_file(str(images[0])), threshold, api_name="/moderate")
        assert result["review_threshold"] == threshold
        assert result["decision"] == ("block" if result["is_nsfw"] else "allow")


@pytest.fixture(scope="module")
def scored(classifier, tmp_path_factory):
    """Generated pictures the tiny model scores lowest and highest, saved as PNGs."""
    folder = tmp_path_factory.mktemp("scored")
    pictures = [varied_image(seed, (64, 48)) for seed in range(40)]
    scores = [classifier.predict(picture).nsfw_score for picture in pictures]
    order = sorted(range(len(scores)), key=scores.__getitem__)
    low, high = pictures[order[0]], pictures[order[-1]]
    paths = {"low": folder / "low.png", "high": folder / "high.png"}
    low.save(paths["low"])
    high.save(paths["high"])
    return {"low": scores[order[0]], "high": scores[order[-1]], "paths": paths, "images": (low, high)}


def test_nsfw_space_policy_changes_the_decision_through_gradio_client(model_dir, scored, tmp_path):
    review = (scored["low"] + scored["high"]) / 2  # the high image is above it ...
    block = min(1.0, scored["high"] + 0.01)  # ... and below block: review
    policy_file = Policy(block=block, review=review).save(tmp_path / "policy.json")
    process, url = start_app(model_dir, tmp_path, policy=str(policy_file))
    try:
        client = Client(url, verbose=False)
        high = client.predict(handle_file(str(scored["paths"]["high"])), api_name="/moderate")
        low = client.predict(handle_file(str(scored["paths"]["low"])), api_name="/moderate")
        assert high["decision"] == "review" and not high["is_nsfw"]
        expected = Policy.load(policy_file)
        assert (high["threshold"], high["review_threshold"]) == (expected.block, expected.review)
        assert low["decision"] == "allow"
        # a caller's own threshold is the block threshold for that call
        assert (
            client.predict(handle_file(str(scored["paths"]["high"])), 0.0, api_name="/moderate")["decision"]
            == "block"
        )
        rows = client.predict(
            [handle_file(str(p)) for p in scored["paths"].values()], api_name="/moderate_batch"
        )
        assert [row["decision"] for row in rows] == ["allow", "review"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_bad_policy_file_stops_the_app_with_one_sentence(model_dir, tmp_path):
    (tmp_path / "policy.json").write_text('{"block": 0.2, "review": 0.9}')
    with pytest.raises(RuntimeError, match="must not be above its block threshold"):
        start_app(model_dir, tmp_path, policy=str(tmp_path / "policy.json"))


def test_a_video_returns_the_flagged_segment_within_one_sampling_step(client, scored, tmp_path):
    low, high = (image.resize((96, 64)) for image in scored["images"])
    fps, truth = 10, (1.5, 3.0)  # frames 15..29 of 40 (4 s) show the high-scoring picture
    frames = [high if truth[0] * fps <= index < truth[1] * fps else low for index in range(40)]
    video = write_video(tmp_path / "clip.mp4", frames, fps=fps)
    threshold = (scored["low"] + scored["high"]) / 2
    result = client.predict(handle_file(str(video)), threshold, "max", 2, 20, api_name="/moderate_frames")
    step = result["frame_times"][1] - result["frame_times"][0]
    assert result["decision"] == "block"
    assert len(result["segments"]) == 1, result
    segment = result["segments"][0]
    assert abs(segment["start"] - truth[0]) <= step and abs(segment["end"] - truth[1]) <= step
    assert segment["peak"] == pytest.approx(scored["high"], abs=0.05)


def test_segments_merge_neighbours_and_split_at_a_low_sample():
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    segments = flagged_segments([0.9, 0.8, 0.1, 0.7, 0.1, 0.95], times, 0.5)
    assert [s.to_dict() for s in segments] == [
        {"start": 0.0, "end": 1.0, "peak": 0.9},
        {"start": 1.5, "end": 2.0, "peak": 0.7},
        {"start": 2.5, "end": 3.0, "peak": 0.95},
    ]
    assert flagged_segments([0.1, 0.2], [0.0, 1.0], 0.5) == []


def test_scan_with_a_policy_writes_decisions_and_segments(model_dir, scored, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, path in scored["paths"].items():
        (folder / f"{name}.png").write_bytes(path.read_bytes())
    low, high = scored["images"]
    again = high.copy()
    again.putpixel((0, 0), (0, 0, 0))  # not identical, so Pillow keeps both frames: 4 of 500 ms
    low.save(folder / "clip.gif", save_all=True, append_images=[high, again, low], duration=500, loop=0)
    review = (scored["low"] + scored["high"]) / 2
    policy = Policy(block=min(1.0, scored["high"] + 0.01), review=review).save(tmp_path / "policy.json")
    out = tmp_path / "out.csv"
    result = run_cli("scan", str(folder), "-m", str(model_dir), "-o", str(out), "--policy", str(policy), "-q")
    assert result.returncode == 0, result.stderr
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in csv.DictReader(io.StringIO(out.read_text()))}
    assert rows["low.png"]["decision"] == "allow" and rows["high.png"]["decision"] == "review"
    assert json.loads(rows["clip.gif"]["segments"]) == [
        {"start": 0.5, "end": 1.5, "peak": pytest.approx(scored["high"], abs=0.05)}
    ]
    assert "2 for review" in result.stderr  # the still and the GIF
    bad = run_cli("scan", str(folder), "-m", str(model_dir), "--policy", str(tmp_path / "nope.json"))
    assert (
        bad.returncode == 2
        and "Could not read the policy file" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_the_policy_setting_is_read_from_the_environment(monkeypatch, tmp_path):
    from nsfw_space import Settings

    monkeypatch.setenv("NSFW_SPACE_POLICY", str(tmp_path / "p.json"))
    assert Settings.from_env().policy == str(tmp_path / "p.json")


def test_a_labelled_zip_is_read_within_its_limits(tmp_path):
    import zipfile

    from nsfw_space.errors import InvalidImageError
    from nsfw_space.space.calibration import zip_members

    picture = io.BytesIO()
    varied_image(1, (32, 24)).save(picture, format="PNG")
    data = picture.getvalue()
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("set/normal/a.png", data)
        handle.writestr("set/NSFW/b.png", data)
        handle.writestr("../nsfw/escape.png", data)  # a name is only ever a label, never a path
        handle.writestr("set/other/c.png", data)  # under no label: left out
        handle.writestr("set/nsfw/notes.txt", b"not an image")
        handle.writestr("set/nsfw/big.png", data + b"\0" * 5000)
    members = zip_members(str(archive), {"nsfw"}, {"normal"}, max_files=10, max_bytes=len(data) + 10)
    assert [(m.name, m.is_nsfw) for m in members] == [
        ("a.png", False),
        ("b.png", True),
        ("escape.png", True),
        ("big.png", True),
    ]
    assert members[0].source == data and isinstance(members[3].source, InvalidImageError)
    assert not (tmp_path.parent / "nsfw").exists()  # nothing was unpacked anywhere
    with pytest.raises(InvalidImageError, match="at most 3"):
        zip_members(archive.read_bytes(), {"nsfw"}, {"normal"}, max_files=3, max_bytes=10**6)
    with pytest.raises(InvalidImageError, match="not a zip"):
        zip_members(b"PK not really", {"nsfw"}, {"normal"}, max_files=3, max_bytes=10**6)


def test_every_seconds_samples_long_clips_by_time(classifier, scored, tmp_path):
    low, high = scored["images"]
    gif = tmp_path / "long.gif"
    pictures = [low if i % 2 else high for i in range(20)]  # 20 frames of 100 ms: 2 s
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    by_time = classifier.with_limits(every=0.5).predict(gif)
    assert len(by_time.frame_scores) == 5  # the last frame starts at 1.9 s: 5 frames, 0.475 s apart
    assert len(classifier.predict(gif).frame_scores) == 8  # the default: 8 evenly spaced
    video = write_video(tmp_path / "clip.mp4", [low.resize((64, 48))] * 40, fps=10)  # 0 .. 3.9 s
    times = classifier.with_limits(every=1.0).predict(video).frame_times
    assert len(times) == 5 and times[0] == 0.0 and times[-1] == pytest.approx(3.9, abs=0.11)
    assert max(b - a for a, b in pairwise(times)) <= 1.0 + 0.11


def test_scan_every_is_checked_and_used(model_dir, scored, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    low, high = scored["images"]
    low.save(folder / "clip.gif", save_all=True, append_images=[high] * 9, duration=200, loop=0)
    out = tmp_path / "out.jsonl"
    middle = str(round((scored["low"] + scored["high"]) / 2, 4))
    result = run_cli(
        "scan",
        str(folder),
        "-m",
        str(model_dir),
        "-o",
        str(out),
        "--every",
        "0.5",
        "--threshold",
        middle,
        "-q",
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text().splitlines()[0])
    assert row["segments"] and row["segments"][0]["start"] > 0  # the first (low) frame is not flagged
    for bad in ("0", "-1", "nan", "soon"):
        refused = run_cli("scan", str(folder), "-m", str(model_dir), "--every", bad)
        assert refused.returncode == 2 and "--every" in refused.stderr and "Traceback" not in refused.stderr


def test_the_pages_score_plot_marks_the_flagged_segments(classifier, scored, tmp_path):
    import base64

    from nsfw_space import Settings
    from nsfw_space.space.views import PageViews

    low, high = scored["images"]
    again = high.copy()
    again.putpixel((0, 0), (0, 0, 0))
    buffer = io.BytesIO()
    low.save(buffer, format="GIF", save_all=True, append_images=[high, again, low], duration=500, loop=0)
    media = {"path": None, "url": "data:image/gif;base64," + base64.b64encode(buffer.getvalue()).decode()}
    middle = (scored["low"] + scored["high"]) / 2
    policy = Policy(block=min(1.0, scored["high"] + 0.01), review=middle)
    assert policy.review == round(middle, 6)  # the policy keeps its thresholds to 6 digits
    views = PageViews(classifier, Settings(), policy)
    verdict, plot, result = views.frames_view(media, None, "max", 2, 8)
    assert "verdict-review" in verdict and result["segments"][0]["start"] == 0.5
    flagged = plot[plot["series"] == "flagged 1"]
    assert list(flagged["time (s)"]) == [0.5, 1.5] and set(flagged["nsfw score"]) == {1.0}
    assert set(plot[plot["series"] == "review threshold"]["nsfw score"]) == {policy.review}
