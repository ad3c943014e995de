"""Slow optimisations (the int8 package, the browser's ONNX model) built in a child process of their own.

Why a child: torch's export and quantisation set process-wide state (fake-tensor modes, compile
caches, C++ threads) that must never meet a serving thread, a crash in the C++ compiler must not
take the server down, and a build must not hold the interpreter at exit. The child runs at the
lowest CPU priority with few threads, so requests keep nearly their own speed meanwhile.

Every outcome is kept under the package's cache key: the package itself, or ``refused.json`` with
the reason (a failed check, a crash), so a restart neither repeats a refused build nor spends its
first minutes on it (``NSFW_SPACE_INT8_RETRY=1`` forces one more attempt). Work is done in a
hidden folder named after the process that owns it; whatever way a build ends, that folder goes,
and a start sweeps the folders of owners that are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REFUSED = "refused.json"
RETRY_SETTING = "NSFW_SPACE_INT8_RETRY"
LEGACY_GRACE_S = 600  # a hidden work folder that names no owner is swept once this old


@dataclass(frozen=True)
class BuildSpec:
    """What the child needs: where the package goes, the fp32 weights to load (a local directory
    or hub id), and how the parent serves meanwhile (to time int8 against it)."""

    folder: str
    source: str
    revision: str | None
    serving_dtype: str  # "float32", "bfloat16", ...
    threads: int  # the parent's torch threads: both forwards are timed with as many
    workdir: str
    parent_pid: int
    tolerance: float  # the check's bound, as the parent holds it
    builder: str = "int8"  # or "module:function", called as function(model, processor, workdir, spec)
    log_level: int = logging.INFO  # the parent's level for our own loggers; libraries stay at WARNING


class NoSource(RuntimeError):
    """There are no fp32 weights to build from."""


def make_spec(
    classifier: Any,
    folder: Path,
    source: tuple[str, str | None] | None,
    *,
    tolerance: float,
    builder: str = "int8",
) -> BuildSpec:
    """What the child builds from: the model's own files (``source``: hub id or directory, and
    revision), else the classifier's fp32 weights saved into the build's work folder."""
    import torch

    workdir = new_workdir(folder)
    if source is None:
        if classifier.dtype != torch.float32:
            shutil.rmtree(workdir, ignore_errors=True)
            raise NoSource("no fp32 weights to build from were given")
        saved = workdir / "source"
        classifier.model.save_pretrained(saved)
        classifier.processor.save_pretrained(saved)
        source = (str(saved), None)
    return BuildSpec(
        folder=str(folder),
        source=source[0],
        revision=source[1],
        serving_dtype=str(classifier.dtype).replace("torch.", ""),
        threads=torch.get_num_threads(),
        workdir=str(workdir),
        parent_pid=os.getpid(),
        tolerance=tolerance,
        builder=builder,
        log_level=logging.getLogger("nsfw_space").getEffectiveLevel(),
    )


# -- outcomes in the cache -------------------------------------------------------------------------
def refusal(folder: Path) -> str | None:
    """The reason an earlier build under this key was refused, or None."""
    try:
        return str(json.loads((folder / REFUSED).read_text())["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_refusal(folder: Path, reason: str) -> None:
    """Store ``refused.json`` as the outcome under ``folder`` (written aside, then renamed)."""
    import torch

    aside = new_workdir(folder)
    try:
        record = {"reason": reason, "torch": torch.__version__, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (aside / REFUSED).write_text(json.dumps(record, indent=1))
        publish(aside, folder)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def publish(workdir: Path, folder: Path) -> None:
    """Make ``workdir`` the outcome at ``folder`` in one rename (an older outcome is replaced)."""
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(workdir, folder)
    except OSError:  # another process published the same key first: theirs is as good
        shutil.rmtree(workdir, ignore_errors=True)


def new_workdir(folder: Path) -> Path:
    """A hidden folder beside ``folder``, named after this process so a sweep knows its owner."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}.", dir=folder.parent))


def sweep(root: Path) -> int:
    """Remove hidden work folders in ``root`` whose owning process is gone; returns how many."""
    removed = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.is_dir()):
            continue
        owner = _owner(entry.name)
        stale = not _alive(owner) if owner else time.time() - entry.stat().st_mtime > LEGACY_GRACE_S
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    if removed:
        logger.info("removed %d unfinished build folder(s) from %s", removed, root)
    return removed


def _owner(name: str) -> int | None:
    parts = name.split(".")  # "", key, pid, random
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the parent's side -------------------------------------------------------------------------------
_children: dict[subprocess.Popen, str] = {}  # each running build's child, and its work folder
_children_lock = threading.Lock()


def build_in_child(spec: BuildSpec, timeout: float | None = None) -> None:
    """Run the build in a child process and wait for it. On return, ``spec.folder`` holds the
    outcome (package or refusal), unless this process is exiting (then nothing is kept).
    The work folder is removed however the child ends."""
    package_root = str(Path(__file__).resolve().parents[2])  # found also when not pip-installed
    paths = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
        "OMP_NUM_THREADS": str(_build_threads(spec)),
    }
    command = [sys.executable, "-m", "nsfw_space.model.builds", json.dumps(asdict(spec))]
    child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    with _children_lock:
        _children[child] = spec.workdir
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop(child)
        code = None
    except BaseException:  # Ctrl-C or SIGTERM while a command waits on its build: no build goes on
        _stop(child, grace=EXIT_GRACE_S)
        raise
    finally:
        with _children_lock:
            _children.pop(child, None)
        shutil.rmtree(spec.workdir, ignore_errors=True)
    folder = Path(spec.folder)
    if _exiting.is_set() or (folder.exists() and code == 0) or code in _STOPPED:
        return  # finished, or stopped (by us at exit, by its parent's death, by a host's SIGTERM)
    why = "it ran past its time limit" if code is None else _ending(code)
    record_refusal(folder, f"the build process ended before it finished ({why})")


STOPPED_STATUS = 128 + signal.SIGTERM  # the child's exit status when asked to stop (SIGTERM)
_STOPPED = (-signal.SIGTERM, STOPPED_STATUS)  # a child stopped, not refused: nothing recorded


def _ending(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _build_threads(spec: BuildSpec) -> int:
    """Half the parent's threads (at least one) for export, calibration and compilation."""
    return max(1, spec.threads // 2)


_exiting = threading.Event()


def exiting() -> bool:
    """True once this process has begun to exit (builds are being stopped)."""
    return _exiting.is_set()


def stop_all() -> None:
    """Stop every running build (at exit) and remove its work folder; nothing is recorded. Here,
    not in the thread that waits on the child: at exit that thread may never run again."""
    _exiting.set()
    with _children_lock:
        children = dict(_children)
    for child, workdir in children.items():
        _stop(child, grace=EXIT_GRACE_S)
        shutil.rmtree(workdir, ignore_errors=True)


EXIT_GRACE_S = 3  # a host that stops a server waits about 10 s (Docker's default) before SIGKILL


def _stop(child: subprocess.Popen, grace: float = 10) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


atexit.register(stop_all)


# -- the child's side ---------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this child when its parent dies (a killed server leaves no build running).

    SIGKILL, not SIGTERM: Python runs a SIGTERM handler only between bytecodes, and a build at
    nice 19 on cores that other work keeps busy spent 12 to 31 s inside one C call (loading
    torch's extension) before it could, outliving its server by that much; and the kernel may
    send the signal more than once as the dying server's threads exit one after another. The
    work folder a killed build leaves is swept at the next start (:func:`sweep`); the flock goes
    with the process."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the request took hold
        raise SystemExit(0)


def _run_child(spec: BuildSpec) -> None:
    import torch

    from nsfw_space.model.loading import load_model_and_processor

    folder, workdir = Path(spec.folder), Path(spec.workdir)
    root = folder.parent
    handle = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one build at a time per cache folder, across processes
        if folder.is_dir():
            return  # another process finished this key (package or refusal) while we waited
        torch.set_num_threads(_build_threads(spec))
        try:
            model, processor = load_model_and_processor(spec.source, revision=spec.revision)
            built = _builder(spec.builder)(model, processor, workdir, spec)
            if _Stop.asked:  # a library swallowed the stop and went on: keep nothing
                raise SystemExit(STOPPED_STATUS)
            publish(built, folder)
        except Exception as err:  # every refusal is an outcome to remember
            if _Stop.asked:  # a library turned our SystemExit into its own error: a stop
                raise SystemExit(STOPPED_STATUS) from err
            logger.warning("%s build refused: %s", spec.builder.split(":")[0], err)
            record_refusal(folder, str(err))
    finally:
        os.close(handle)


def _builder(name: str):
    """The function that builds: ``"int8"`` or ``"module:function"`` (imported in the child only)."""
    if name == "int8":
        return build_int8
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def build_int8(model, processor, workdir: Path, spec: BuildSpec) -> Path:
    """The int8 package of ``model`` in ``workdir/package``, timed against the serving plan."""
    import torch

    from nsfw_space.model import quantize
    from nsfw_space.model.optimize import eager_forward
    from nsfw_space.model.preprocess import Preprocessor
    from nsfw_space.model.runner import prepared_model

    preprocess = Preprocessor(processor)
    served = prepared_model(model, torch.device("cpu"), getattr(torch, spec.serving_dtype), copy_first=True)
    plain = eager_forward(served)

    def plain_scores(pixels):
        tensor = torch.from_numpy(pixels).to(getattr(torch, spec.serving_dtype))
        with torch.inference_mode():
            return plain(tensor)

    quantize.TOLERANCE = spec.tolerance
    quantize.build_package(model, workdir, preprocess, plain_scores, timing_threads=spec.threads)
    return workdir / "package"


class _Stop:
    """Whether the child was asked to stop (SIGTERM): whatever fails after that is no refusal.

    A plain flag, not a ``threading.Event``: the handler runs between any two bytecodes of the
    main thread, a second SIGTERM inside the first one's ``Event.set`` took the Event's lock again,
    and the child slept on it for good, holding its cache folder's lock (seen in CI: a killed
    server's build, its dump three handler calls deep; the kernel may send the parent-death
    signal again as the dying server's threads exit one after another, twice in one of three
    tries here)."""

    asked = False


def _stop_requested(*_: Any) -> None:
    if _Stop.asked:
        return  # once is enough: the exit is under way (or a library went on, and nothing is kept)
    _Stop.asked = True
    sys.exit(STOPPED_STATUS)  # unwinds, so the work folder goes


def main(argv: list[str]) -> int:
    spec = BuildSpec(**json.loads(argv[1]))
    signal.signal(signal.SIGTERM, _stop_requested)
    _die_with_parent(spec.parent_pid)
    with contextlib.suppress(OSError):
        os.nice(19)
    # Libraries at WARNING: torch's INFO lines (its fake-tensor cache statistics at exit among them)
    # are not the user's concern, and a stopped child's lines must not follow its parent's last.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("nsfw_space", __name__):  # this module runs as __main__ in the child
        logging.getLogger(name).setLevel(spec.log_level)
    from nsfw_space.logs import quiet_libraries

    quiet_libraries()
    try:
        _run_child(spec)
    finally:
        shutil.rmtree(spec.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
