"""Test-only kill hooks, loaded by every Python process of a test run that puts this folder first
on PYTHONPATH (tests.conftest.kill_hook): the launcher and the DirectRunner's worker processes.

BEAMSCORE_TEST_KILL_IN_COMMIT says what happens right after a commit's journal is written,
before any file moves (a callback in pipeline.staging.AFTER_JOURNAL):
    journal           SIGKILL to the committing process (what a lost machine does at worst);
    sigterm_launcher  SIGTERM to the launcher a DirectRunner worker process runs under, given a
                      second to arrive.
Production code knows only that callbacks may be registered there.
"""

import os
import signal
import time

WHAT = os.environ.get("BEAMSCORE_TEST_KILL_IN_COMMIT")


def _launcher_pid() -> int:
    """The process that runs pipeline.run, among this process's ancestors."""
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"pipeline.run" in f.read():
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise RuntimeError("no pipeline.run process above this one")


def _after_journal(_staging) -> None:
    if WHAT == "journal":
        os.kill(os.getpid(), signal.SIGKILL)
    elif WHAT == "sigterm_launcher":
        os.kill(_launcher_pid(), signal.SIGTERM)
        time.sleep(1)


if WHAT:
    from pipeline import staging

    staging.AFTER_JOURNAL.append(_after_journal)
