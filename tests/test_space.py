"""What the Hugging Face Space needs: the README's front matter, pinned versions, and app.py
importing with the ``spaces`` package present, absent, and on a (simulated) ZeroGPU Space."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

CHECK_APP = """
import gradio as gr
import app
assert isinstance(app.demo, gr.Blocks), type(app.demo)
print("spaces" in __import__("sys").modules and __import__("sys").modules["spaces"] is not None)
"""


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def pinned(requirement: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if re.sub(r"\[.*\]", "", name).strip().lower() == requirement:
            return version.strip()
    raise AssertionError(f"{requirement} is not pinned in requirements.txt")


def test_front_matter_describes_the_space():
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert "Falconsai/nsfw_image_detection" in meta["models"]
    assert "Falconsai/nsfw_image_detection" in meta["preload_from_hub"]
    assert 0 < len(meta["short_description"]) <= 60
    assert meta["license"] and meta["title"] and meta["emoji"]
    assert meta["colorFrom"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def test_sdk_version_is_the_pinned_gradio():
    assert str(front_matter()["sdk_version"]) == pinned("gradio")
    import gradio

    assert gradio.__version__ == pinned("gradio")


def test_torch_is_pinned():
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned("torch"))


def _import_app(model_dir, tmp_path, extra_env=None, prelude=""):
    env = dict(
        os.environ, NSFW_SPACE_MODEL=str(model_dir), GRADIO_TEMP_DIR=str(tmp_path), **(extra_env or {})
    )
    env.pop("SPACES_ZERO_GPU", None) if "SPACES_ZERO_GPU" not in (extra_env or {}) else None
    return subprocess.run(
        [sys.executable, "-c", prelude + CHECK_APP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_app_imports_with_the_spaces_package(model_dir, tmp_path):
    import importlib.util

    assert importlib.util.find_spec("spaces") is not None, "requirements-dev.txt installs spaces"
    result = _import_app(model_dir, tmp_path, prelude="import spaces\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")


@pytest.mark.slow
def test_app_imports_without_the_spaces_package(model_dir, tmp_path):
    result = _import_app(
        model_dir, tmp_path, prelude="import sys\nsys.modules['spaces'] = None  # not installed\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")


@pytest.mark.slow
def test_on_zerogpu_the_model_calls_run_inside_spaces_gpu(model_dir, tmp_path):
    stub = tmp_path / "stub"
    (stub / "spaces").mkdir(parents=True)
    (stub / "spaces" / "__init__.py").write_text(
        "WRAPPED = []\n"
        "def GPU(fn=None, **kwargs):\n"
        "    if fn is None:\n"
        "        return lambda f: GPU(f, **kwargs)\n"
        "    WRAPPED.append(getattr(fn, '__qualname__', repr(fn)))\n"
        "    return fn\n"
    )
    prelude = f"import sys\nsys.path.insert(0, {str(stub)!r})\n"
    check = "\nimport spaces\nprint('WRAPPED', sorted(set(spaces.WRAPPED)))\n"
    env = dict(
        os.environ, NSFW_SPACE_MODEL=str(model_dir), GRADIO_TEMP_DIR=str(tmp_path), SPACES_ZERO_GPU="true"
    )
    result = subprocess.run(
        [sys.executable, "-c", prelude + CHECK_APP + check],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    wrapped = result.stdout.split("WRAPPED", 1)[1]
    assert "NSFWClassifier.predict" in wrapped and "Handlers._score_sources" in wrapped


def test_the_examples_sit_beside_app_py_and_the_page_uses_them():
    from nsfw_space.space.demo import example_paths

    top = ROOT / "examples"
    assert {"astronaut.jpg", "coffee.jpg", "LICENSES.md"} <= {p.name for p in top.iterdir()}
    assert [p.resolve() for p in example_paths()] == sorted(
        p.resolve() for p in top.iterdir() if p.suffix == ".jpg"
    )  # one copy in the repository: the package reaches it through a link


@pytest.mark.slow
def test_an_installed_wheel_still_finds_its_examples(tmp_path):
    """A wheel carries examples/ as package data, and the page finds them outside the checkout."""
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("nsfw_space-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"nsfw_space/examples/coffee.jpg", "nsfw_space/examples/LICENSES.md"} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nsfw_space.media.samples import example_photos; print(len(example_photos()))",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(site)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.stdout.strip() == "4", found.stderr


def test_every_setting_is_in_the_manual():
    """docs/configuration.md names every NSFW_SPACE_* setting there is: the manual cannot fall behind."""
    from dataclasses import fields

    from nsfw_space.config import ENV_PREFIX, Settings

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert [f.name for f in fields(Settings) if f"`{ENV_PREFIX}{f.name.upper()}`" not in text] == []


def test_the_idle_queue_does_not_poll_every_millisecond(classifier):
    """Gradio's queue looks for work every 1 ms when idle (6.7 % of a core on an idle 2-core
    machine, benchmarks/private_mode.py); the Space's polls every 10 ms (1.9 % measured)."""
    from nsfw_space.space.demo import QUEUE_POLL_S, create_demo

    demo = create_demo(classifier)
    assert demo._queue.sleep_when_free == QUEUE_POLL_S == 0.01


def test_plain_http_calls_leave_no_sessions_behind_and_a_pages_state_stays(classifier, images, gradio_tmp):
    """Each call over the plain HTTP API comes with a new session, which Gradio keeps (about
    190 KB each, up to 10,000); the sweeper drops those that hold no gr.State value once idle."""
    import threading

    import gradio as gr

    from nsfw_space import Settings
    from nsfw_space.space.demo import create_demo, launch_options
    from nsfw_space.space.sessions import drop_idle_stateless_sessions
    from tests.helpers import call_with_file, upload

    settings = Settings(private_mode=False)
    demo = create_demo(classifier, settings)
    assert any(thread.name == "nsfw-session-sweeper" for thread in threading.enumerate())
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_options(settings)
    )
    try:
        holder = demo.state_holder
        before = len(holder.session_data)
        answers = [call_with_file(url, "classify", upload(url, images[i])) for i in range(4)]
        assert [event for event, _ in answers] == ["complete"] * 4
        assert len(holder.session_data) == before + 4  # one session per plain call
        state_id = next(key for key, block in demo.blocks.items() if isinstance(block, gr.State))
        page = holder["a-page"]  # what a page's session holds: a gr.State value (its session policy)
        page[state_id] = {"block": 0.7}

        assert drop_idle_stateless_sessions(demo) == 0  # nothing idle for 10 minutes yet
        assert drop_idle_stateless_sessions(demo, idle_seconds=0) == before + 4
        assert list(holder.session_data) == ["a-page"]
        assert holder["a-page"].state_data[state_id] == {"block": 0.7}
        event, label = call_with_file(url, "classify", upload(url, images[0]))  # and calls go on
        assert event == "complete" and label == answers[0][1]
    finally:
        demo.close()
