"""SIGTERM stops the process as Ctrl-C does.

Docker, Kubernetes, systemd and Hugging Face Spaces stop a server with SIGTERM, and Python's
default for it ends the process at once: no ``finally``, no ``atexit``, so a running int8 or
browser-model build was killed with its server (the kernel's parent-death signal) and left its
hidden work folder in the cache until the next start swept it. Turned into ``Terminated`` (a
``KeyboardInterrupt``), the stop goes the way Ctrl-C goes: Gradio closes its server, a command says
it was stopped, and at exit the builds are stopped and their work folders removed
(``builds.stop_all``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGTERM_STATUS = 128 + signal.SIGTERM  # a command stopped by SIGTERM exits with this


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM: stop as after Ctrl-C."""


class _Asked:
    once = False  # a plain flag, as in the build's child: a handler must take no lock
    pid = 0  # the process that installed the handler


def _terminate(signum: int, frame: Any) -> None:
    if os.getpid() != _Asked.pid:  # a forked child (a ZeroGPU or multiprocessing worker): the default
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if _Asked.once:
        return  # the stop is under way: a second signal must not break off the cleanup
    _Asked.once = True
    raise Terminated()


def stop_on_sigterm() -> bool:
    """Make SIGTERM raise ``Terminated`` in the main thread for the rest of the process's life
    (``app.py``). Only from the main thread, and only where SIGTERM still has Python's default
    (a host's or a library's own handler is left alone); returns whether it was installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    _Asked.once, _Asked.pid = False, os.getpid()
    signal.signal(signal.SIGTERM, _terminate)
    return True


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """:func:`stop_on_sigterm` for the length of a ``with`` block (a command), then the default back."""
    installed = stop_on_sigterm()
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
