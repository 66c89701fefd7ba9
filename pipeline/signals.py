"""The stop signals' shared state: the launcher's handlers (pipeline.run) record a signal here,
and a commit (the launcher's or the commit stage's, in the same process on the DirectRunner)
holds it until the output is whole again."""

from __future__ import annotations

import contextlib

from pipeline.errors import Interrupted

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
