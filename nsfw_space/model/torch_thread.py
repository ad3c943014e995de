"""A process's model work on one long-lived thread, whoever calls.

PyTorch's CPU kernels run on GNU OpenMP (libgomp), which keeps a pool of worker threads for each
thread that starts parallel work, for as long as that thread lives. Once two long-lived threads
have one (the main thread that loaded the model, and a server's worker that runs it), the process
manages more OpenMP threads than the CPU has cores, and libgomp stops spinning between parallel
regions: each of the hundreds of regions of a forward pass then waits for sleeping threads to
wake. On the 2-core EPYC of docs/speed.md a parallel region took 79 to 86 us instead of 12 to 13,
and ViT-B/16 in int8 58 to 61 ms an image instead of 36 to 43 (``python
benchmarks/torch_thread.py``). So a CPU classifier loads and runs every forward pass here, on one
thread (:func:`on_torch_thread`); explanations, which predictions never wait for, run on a thread
that ends with them, and its pool with it (:func:`on_passing_thread`).

The process that starts this thread keeps its large buffers in the heap, where the next forward
reuses them, and hands them back while idle (:func:`~nsfw_space.media.budgets.start_memory_trimmer`):
mapped one by one, as glibc maps buffers over 32 MB, every forward of a batch faulted them in anew.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

from nsfw_space.media.budgets import start_memory_trimmer

NAME = "nsfw-torch"
T = TypeVar("T")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_jobs: queue.SimpleQueue | None = None


def on_torch_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run on the process's torch thread; its result or its exception.

    Called on that thread (from work already running there), ``fn`` runs at once. The torch
    thread uses the caller's ``torch.get_num_threads()``, so a count set anywhere still holds.
    """
    if threading.current_thread() is _thread:
        return fn(*args, **kwargs)
    future: Future = Future()
    _queue().put((future, torch.get_num_threads(), fn, args, kwargs))
    return future.result()


def for_device(device: torch.device, fn: Callable[[], T]) -> T:
    """``fn()`` on the torch thread for a CPU ``device``, here for any other (a GPU's work is not
    OpenMP's)."""
    return on_torch_thread(fn) if device.type == "cpu" else fn()


def on_passing_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run on a new thread that ends with it (so does its OpenMP pool):
    for torch work that must not wait behind the torch thread's (explanations, which predictions
    never wait for either)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - raised again in the caller
            future.set_exception(err)

    thread = threading.Thread(target=run, name=f"{NAME}-passing", daemon=True)
    thread.start()
    return future.result()


def _queue() -> queue.SimpleQueue:
    global _thread, _jobs
    with _lock:
        if _thread is None or not _thread.is_alive():  # first use, or in a forked child
            start_memory_trimmer()  # the forward's buffers stay in the heap, and go back when idle
            _jobs = queue.SimpleQueue()
            _thread = threading.Thread(target=_serve, args=(_jobs,), name=NAME, daemon=True)
            _thread.start()
        return _jobs


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        future, threads, fn, args, kwargs = jobs.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            result = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - the caller's to handle, the thread goes on
            future.set_exception(err)
        else:
            future.set_result(result)
            del result
        del future, fn, args, kwargs  # hold no caller's objects while waiting for the next job
