"""The house: layers that only point down, a light import, and a CLI that checks before it loads."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nsfw_space import cli
from tests.conftest import ROOT

PACKAGE = ROOT / "nsfw_space"
# Which rooms each room may import from (besides itself and the top-level errors/config/modes/logs).
ALLOWED = {
    "media": set(),
    "model": {"media"},
    "web": {"media", "model"},
    "desk": {"media"},  # the team's desk needs decoded images and their hashes, never the model
    "space": {"media", "model", "web", "desk", "bulk"},
    "bulk": {"media", "model", "desk"},
    "training": {"media", "model", "bulk"},
    "tools": {"media", "model", "web", "desk", "space", "bulk", "training"},
}


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "nsfw_space" and len(parts) > 1 and parts[1] in ALLOWED:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(room):
    for path in sorted((PACKAGE / room).glob("*.py")):
        wrong = _imported_rooms(path) - ALLOWED[room] - {room}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_top_level_modules_keep_their_floor():
    # errors, modes and logs are the ground floor; config builds media's DecodeLimits; the package's
    # __init__ names the public classes lazily; only the CLI reaches the tools
    floors = {"errors": set(), "modes": set(), "logs": set(), "config": {"media"}, "__init__": {"model"}}
    for path in sorted(PACKAGE.glob("*.py")):
        rooms = _imported_rooms(path)
        if path.stem in floors:
            assert rooms <= floors[path.stem], f"{path.name} imports {sorted(rooms)}"
        elif path.stem not in ("cli", "commands", "__main__"):
            assert "tools" not in rooms, f"{path.name} imports the tools"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_importing_the_package_loads_neither_torch_nor_gradio():
    result = _python(
        "import sys, nsfw_space; print(sorted({'torch', 'gradio', 'transformers'} & set(sys.modules)))", ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_does_not_import_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nsfw_space", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "scan" in result.stdout
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert not [name for name in imported if name.split(".")[0] in ("torch", "gradio", "transformers")]


def test_the_installed_package_works_from_another_folder(tmp_path):
    # the README's set-up installs the package (pip install -e .); nothing here leans on the clone
    result = _python(
        "from nsfw_space import NSFWClassifier, Settings; print(NSFWClassifier.__name__)", tmp_path
    )
    assert result.returncode == 0, result.stderr
    script = Path(sys.executable).parent / "nsfw-space"
    assert script.exists() or shutil.which("nsfw-space"), "the nsfw-space command is not installed"
    help_text = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0 and "scan" in help_text.stdout


def test_scan_refuses_a_missing_input_before_loading_any_model(capsys, tmp_path):
    code = cli.main(["scan", str(tmp_path / "nosuchdir"), "-m", str(tmp_path / "no-model")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"nsfw-space scan: error: No such file or folder: {tmp_path / 'nosuchdir'}."]


def test_scan_refuses_a_bad_output_suffix_before_loading_any_model(capsys, images, tmp_path):
    code = cli.main(["scan", str(images[0]), "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "r.txt")])
    assert code == 2 and "--output must end in .csv, .jsonl or .parquet" in capsys.readouterr().err


def test_resume_with_nothing_left_loads_no_model(capsys, model_dir, images, tmp_path):
    output = tmp_path / "r.csv"
    assert cli.main(["scan", str(images[0]), "-m", str(model_dir), "-o", str(output), "-q"]) == 0
    assert "scanned 1 file in" in capsys.readouterr().err
    # a model that does not exist would fail the run if it were loaded
    code = cli.main(["scan", str(images[0]), "-m", str(tmp_path / "no-model"), "-o", str(output), "--resume"])
    assert code == 0 and "nothing to scan: all 1 already in" in capsys.readouterr().err


def test_model_errors_name_the_argument_first(tmp_path):
    from nsfw_space import ModelLoadError, NSFWClassifier

    with pytest.raises(ModelLoadError) as caught:
        NSFWClassifier.from_pretrained(str(tmp_path / "nowhere"))
    message = str(caught.value)
    assert message.index("the model argument") < message.index("NSFW_SPACE_MODEL")
