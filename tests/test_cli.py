"""The command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What scan writes for the tiny model (labels normal, nsfw): decision and segments came with the
# policy (issue 14), id and sha256 with scanning at scale (issue 15).
SCAN_COLUMNS = [
    "id", "path", "sha256", "label", "normal", "nsfw", "nsfw_score", "is_nsfw", "decision", "segments", "error",
]  # fmt: skip


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, timeout: float = 240, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "nsfw_space", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("scan")
    (root / "nested" / "deeper").mkdir(parents=True)
    for index, path in enumerate(images[:4]):
        target = root / ("nested/deeper" if index % 2 else "nested") / path.name
        shutil.copy(path, target)
    (root / "nested" / "broken.jpg").write_text("not an image at all")
    (root / "readme.txt").write_text("ignored: not an image suffix")
    return root


def test_scan_writes_a_csv_row_per_file_with_an_error_row(folder, model_dir, classifier, tmp_path):
    output = tmp_path / "out.csv"
    result = run_cli(
        "scan", str(folder), "--model", str(model_dir), "--output", str(output), "--precision", "fp32"
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(output.open()))
    assert list(rows[0]) == SCAN_COLUMNS
    assert all(row["id"] == row["path"] for row in rows)  # a file's id is its path
    assert all(
        row["decision"] == ("block" if row["is_nsfw"] == "True" else "allow")
        for row in rows
        if not row["error"]
    )
    assert len(rows) == 5 and not any("readme" in row["path"] for row in rows)
    broken = [row for row in rows if row["path"].endswith("broken.jpg")]
    assert broken and "not an image" in broken[0]["error"] and broken[0]["label"] == ""
    for row in rows:
        if not row["error"]:
            expected = classifier.predict(row["path"])
            assert float(row["nsfw"]) == pytest.approx(expected.nsfw_score, abs=1e-4)
            assert row["is_nsfw"] == str(expected.nsfw_score >= 0.5)
    assert "scanned 5 files" in result.stderr and "1 unreadable" in result.stderr
    assert "Traceback" not in result.stderr


def test_scan_jsonl_and_threshold(folder, model_dir, tmp_path):
    output = tmp_path / "out.jsonl"
    result = run_cli("scan", str(folder), "-m", str(model_dir), "-o", str(output), "--threshold", "0", "-q")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 5
    assert all(row["is_nsfw"] is True and row["decision"] == "block" for row in rows if not row["error"])
    assert list(rows[0]) == SCAN_COLUMNS  # JSON Lines keys in the same order as the CSV's columns


def test_scan_resume_skips_files_already_done(folder, model_dir, tmp_path):
    output = tmp_path / "resume.csv"
    first = run_cli("scan", str(folder / "nested" / "deeper"), "-m", str(model_dir), "-o", str(output), "-q")
    assert first.returncode == 0, first.stderr
    done = len(list(csv.DictReader(output.open())))
    second = run_cli("scan", str(folder), "-m", str(model_dir), "-o", str(output), "--resume", "-q")
    assert second.returncode == 0, second.stderr
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 5 and len({row["path"] for row in rows}) == 5
    assert f"{done} already done" in second.stderr


def test_scan_to_stdout(folder, model_dir):
    result = run_cli("scan", str(folder / "nested" / "deeper"), "-m", str(model_dir), "-q")
    assert result.returncode == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2


def test_unloadable_model_is_one_line_and_exit_2(folder, tmp_path):
    result = run_cli("scan", str(folder), "--model", str(tmp_path / "missing"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no such directory" in lines[0] and "Traceback" not in result.stderr


def test_mistakes_are_refused_before_torch_is_imported(folder, model_dir, images, tmp_path):
    """A wrong model, output, label folder or an unreachable base is one line at once: every
    command checks its arguments, inputs and the model's location before it imports torch, so a
    typo costs a fraction of a second, not a model load. All cases in one interpreter, which has
    imported neither torch nor Gradio at the end."""
    missing = str(tmp_path / "missing")
    (tmp_path / "labelled" / "cats").mkdir(parents=True)
    shutil.copy(images[0], tmp_path / "labelled" / "cats" / "a.jpg")
    cases = [
        (["scan", str(folder), "--model", missing], "no such directory"),
        (
            ["scan", str(folder), "-m", str(model_dir), "-o", str(tmp_path / "x.txt")],
            ".csv, .jsonl or .parquet",
        ),
        (["explain", str(images[0]), "-o", str(images[1]), "-m", str(model_dir)], "is a file, not a folder"),
        (["explain", str(images[0]), "-o", str(tmp_path / "b"), "-m", missing], "no such directory"),
        (
            [
                "eval",
                str(tmp_path / "labelled"),
                "--model",
                str(model_dir),
                "--output-dir",
                str(tmp_path / "e"),
            ],
            "cats",
        ),
        (["train", str(tmp_path / "labelled"), "--output-dir", str(tmp_path / "t")], "--base"),
        (["serve", "-m", missing], "no such directory"),
        (["export-web", str(tmp_path / "site"), "-m", missing], "no such directory"),
    ]
    script = (
        "import contextlib, io, json, sys\n"
        "from nsfw_space.cli import main\n"
        "results = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        results.append([main(args), err.getvalue()])\n"
        "print(json.dumps({'results': results, 'torch': 'torch' in sys.modules or 'gradio' in sys.modules}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps([args for args, _ in cases])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    for (args, phrase), (code, stderr) in zip(cases, outcome["results"], strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and phrase in lines[0], (args, stderr)
    assert not outcome["torch"]


def test_bad_arguments_exit_2(folder, model_dir, tmp_path):
    assert run_cli("scan", str(folder), "-m", str(model_dir), "--threshold", "7").returncode == 2
    wrong_suffix = run_cli("scan", str(folder), "-m", str(model_dir), "-o", str(tmp_path / "x.txt"))
    assert wrong_suffix.returncode == 2 and ".csv, .jsonl or .parquet" in wrong_suffix.stderr


@pytest.mark.slow
def test_loadtest_answers_or_refuses_busy_with_no_failures(model_dir, images):
    result = run_cli(
        "loadtest",
        "--image",
        str(images[0]),
        "--users",
        "12",
        "--rounds",
        "2",
        # one request at a time and room for 2 more: 12 simultaneous callers must overflow it
        env_extra={
            "NSFW_SPACE_MODEL": str(model_dir),
            "NSFW_SPACE_QUEUE_SIZE": "2",
            "NSFW_SPACE_CONCURRENCY": "1",
        },
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line.split() for line in result.stdout.splitlines()[1:] if line.strip() and line.split()[0].isdigit()
    ]
    assert len(rows) == 2
    for _, users, answered, wrong, busy, failed, *_ in rows:
        assert int(answered) + int(busy) == int(users) == 12
        assert int(wrong) == 0 and int(failed) == 0 and int(answered) >= 1, result.stdout
    assert sum(int(row[4]) for row in rows) >= 1, result.stdout  # the small queue really refused some


def test_sigterm_is_a_stop_once_in_this_process_and_the_default_in_a_forked_child():
    """What every command and app.py run under: SIGTERM raises ``Terminated`` (as Ctrl-C raises
    KeyboardInterrupt), a second one while stopping is ignored, a forked child (a ZeroGPU or
    multiprocessing worker) dies of it as before, and the default comes back after the block."""
    script = textwrap.dedent(
        """
        import os, signal, time
        from nsfw_space.stopping import Terminated, sigterm_stops
        try:
            with sigterm_stops():
                child = os.fork()
                if child == 0:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                    os._exit(0)
                print("child", os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                except Terminated:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)
                    print("second ignored")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                print("third ignored")
        finally:
            print("default back", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == [
        "child -15",
        "second ignored",
        "third ignored",
        "default back True",
    ]
