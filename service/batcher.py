"""Requests scored together: one scoring thread takes every request waiting when it is free.

No request waits for others to arrive: at low load each request is scored alone, as soon as it
comes; under load, the requests that queued while a batch was scored go together into the next
model call (up to max_rows rows; a request is never split). Scoring runs off the event loop, so
the service keeps answering health checks and metrics while a batch scores. A row's outcome
does not depend on the rows it is scored with (scoring.values; the parity test shows it).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

_LOG = logging.getLogger("service")


class Job(NamedTuple):
    """A request's rows, how to turn their outcome into an answer, and where it goes."""

    rows: list[dict]
    render: Callable[[Any], Any]
    future: concurrent.futures.Future


class Batcher:
    """A scoring thread over a queue of jobs.

    Args:
        score: scores the rows of several requests at once: given each request's rows, returns
            each request's outcome.
        max_rows: the most rows in one call of `score` (a bigger request goes alone).
    """

    def __init__(self, score: Callable[[list[list[dict]]], list[Any]], max_rows: int):
        self._score = score
        self._max_rows = max_rows
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="beamscore-scoring", daemon=True)
        self.batches = 0  # model calls made, for tests and metrics

    def start(self) -> None:
        self._thread.start()

    def submit(self, rows: list[dict], render: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Queues a request's rows; the future gets render(outcome), or the exception."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(Job(rows, render, future))
        return future

    def stop(self) -> None:
        """Scores what is queued, then ends the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        carried: Job | None = None
        while True:
            job = carried or self._queue.get()
            carried = None
            if job is None:
                return
            jobs, rows = [job], len(job.rows)
            while rows < self._max_rows:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None or rows + len(more.rows) > self._max_rows:
                    carried = more
                    break
                jobs.append(more)
                rows += len(more.rows)
            self._serve(jobs)

    def _serve(self, jobs: list[Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches += 1
        try:
            outcomes = self._score([j.rows for j in live])
        except BaseException as e:  # noqa: BLE001 - a bug: each request is told, none hangs
            _LOG.exception("scoring %d request(s) failed", len(live))
            for j in live:
                j.future.set_exception(e)
            return
        for j, outcome in zip(live, outcomes):
            try:
                j.future.set_result(j.render(outcome))
            except BaseException as e:  # noqa: BLE001 - this request's answer only
                _LOG.exception("answering a request failed")
                j.future.set_exception(e)
