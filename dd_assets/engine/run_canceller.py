"""Cancelling a stopped stage's work on Data Designer's event loop, as Data Designer itself does on Ctrl-C."""

from __future__ import annotations

import asyncio
import threading
import time

RECANCEL_AFTER_S = 5.0


class RunCanceller:
    """One stage's tasks on Data Designer's loop (its scheduler runs, its model health checks) and Data Designer's own
    cancel flags of its scheduler runs, all cancelled once the stage's guard stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self._cancelled_at = 0.0
        self._cancel_events: set[threading.Event] = set()
        self._tasks: list[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = []

    def add_task(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        """A task to cancel on stop (cancelled now if the stage is already stopped)."""
        with self._lock:
            self._tasks.append((loop, task))
            cancel = self.cancelled
        if cancel:
            loop.call_soon_threadsafe(task.cancel)

    def add_cancel_event(self, event: threading.Event) -> None:
        """Data Designer's cancel flag of a scheduler run of this stage."""
        with self._lock:
            self._cancel_events.add(event)

    def forget_tasks(self) -> None:
        with self._lock:
            self._tasks.clear()

    def cancel(self) -> None:
        """Cancel every task and set every flag (once; :meth:`send` sends it again)."""
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
        self.send()

    def send(self) -> None:
        """Cancel the tasks still running on Data Designer's loop, and set Data Designer's own cancel flags."""
        with self._lock:
            self._cancelled_at = time.monotonic()
            tasks = [(loop, task) for loop, task in self._tasks if not task.done()]
            events = list(self._cancel_events)
        for event in events:
            event.set()
        for loop, task in tasks:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: nothing runs there any more
                pass

    def lost(self, now: float) -> bool:
        """A cancel was sent a while ago and a run still goes on (Python 3.11 can lose a cancel inside wait_for)."""
        with self._lock:
            return (
                self.cancelled
                and now - self._cancelled_at >= RECANCEL_AFTER_S
                and any(not task.done() for _, task in self._tasks)
            )
