"""Sessions that API calls leave behind.

Gradio keeps a session state for every session hash it sees (for this Space's page about 190 KB:
a copy of every component's config) until it holds ``state_session_capacity`` of them (10,000).
Each plain HTTP call (``POST /gradio_api/call/...``, curl's way) comes with a new hash, so 10,000
such calls would hold about 1.9 GB that nothing reads again: measured 390 MB more server memory
after 2,000 ``/classify`` calls. Sessions that hold no ``gr.State`` value and have not been used
for ``IDLE_SECONDS`` are dropped every ``SWEEP_SECONDS``; a later call with the same hash gets a
fresh one, the same as it had (a page's sessions hold the page's ``gr.State`` values and stay).
"""

from __future__ import annotations

import datetime
import logging
import threading
import weakref
from typing import Any

logger = logging.getLogger(__name__)

IDLE_SECONDS = 600.0
SWEEP_SECONDS = 60.0


def drop_idle_stateless_sessions(demo: Any, idle_seconds: float | None = None) -> int:
    """Drop ``demo``'s sessions that hold no gr.State value and were last used ``idle_seconds``
    (default IDLE_SECONDS) ago or earlier; returns how many. Does nothing before launch, or if
    Gradio keeps sessions in some other way than this module knows."""
    idle_seconds = IDLE_SECONDS if idle_seconds is None else idle_seconds
    holder = getattr(demo, "state_holder", None)
    sessions = getattr(holder, "session_data", None)
    last_used = getattr(holder, "time_last_used", None)
    lock = getattr(holder, "lock", None)
    if not isinstance(sessions, dict) or not isinstance(last_used, dict) or lock is None:
        return 0
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=idle_seconds)
    with lock:
        stale = [
            session
            for session, state in list(sessions.items())
            if getattr(state, "state_data", None) == {} and _used_before(last_used.get(session), cutoff)
        ]
        for session in stale:
            sessions.pop(session, None)
            last_used.pop(session, None)
    return len(stale)


def _used_before(when: Any, cutoff: datetime.datetime) -> bool:
    return isinstance(when, datetime.datetime) and when <= cutoff


def start_session_sweeper(demo: Any, every: float | None = None) -> threading.Thread:
    """Sweep ``demo``'s idle stateless sessions every ``every`` seconds (default SWEEP_SECONDS) on
    a daemon thread, which ends once the demo is gone."""
    reference = weakref.ref(demo)
    every = SWEEP_SECONDS if every is None else every

    def sweep() -> None:
        while True:
            threading.Event().wait(every)
            current = reference()
            if current is None:
                return
            try:
                dropped = drop_idle_stateless_sessions(current)
            except Exception:  # a sweep that fails leaves Gradio's sessions as they are
                logger.debug("session sweep failed", exc_info=True)
                dropped = 0
            del current
            if dropped:
                logger.debug("dropped %d idle API sessions", dropped)

    thread = threading.Thread(target=sweep, name="nsfw-session-sweeper", daemon=True)
    thread.start()
    return thread
