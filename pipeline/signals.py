"""The stop signals: the launcher's handlers (`stop_the_run`, around pipeline.run) record a signal
here, and a commit (the launcher's or the commit stage's, in the same process on the
DirectRunner) holds it until the output is whole again."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable

from pipeline.errors import Interrupted, RunFailed

SIGNALS: list[int] = []  # the stop signal this process received (one at most)
HELD: list[bool] = []  # not empty while a stop signal must wait (the commit)


@contextlib.contextmanager
def signals_held():
    """A stop signal that arrives inside waits for the block to end, then stops the run: the
    commit is never left half done by SIGINT or SIGTERM."""
    HELD.append(True)
    try:
        yield
    finally:
        HELD.pop()
    if SIGNALS:
        raise Interrupted(SIGNALS[0])


class QuietAfterSignal(logging.Filter):
    """Drops Beam's error logs (with their tracebacks) of a bundle a stop signal interrupted,
    and of a commit stage that failed in this process (its message is the error line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam"):
            return True
        if SIGNALS:
            return False
        failed = record.exc_info[1] if record.exc_info else None
        if is_stream_failure(failed):  # a BigQuery stream: the error line names it
            return False
        return not isinstance(failed, RunFailed) or "'Commit'" not in record.getMessage()


def is_stream_failure(e: BaseException | None) -> bool:
    """Whether an exception is, or was raised from, a BigQuery stream that failed."""
    from transforms.read import StreamFailed

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, StreamFailed):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def stop_the_run(commit_begun: Callable[[], bool]):
    """SIGINT (Ctrl-C) and SIGTERM (what schedulers send to stop a task) stop the run: it
    commits nothing, and exits 128 + the signal's number."""

    def stop(signum, _frame):
        if not SIGNALS:
            SIGNALS.append(signum)
            if not HELD and not commit_begun():
                raise Interrupted(signum)

    quiet = QuietAfterSignal()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for handler in handlers:
            handler.removeFilter(quiet)
        SIGNALS.clear()
