"""The launcher's failure kinds, each with the exit code of the contract.

Anything else that escapes (a bug) is exit 4: see pipeline.run.main.
"""

import signal


class ConfigError(Exception):
    """Bad configuration or input found before any row is scored: exit 2, one line."""

    exit_code = 2


class RunFailed(Exception):
    """The run could not complete (worker crash, unreachable sink or service): exit 3."""

    exit_code = 3


class Interrupted(BaseException):
    """The run was stopped by a signal (a scheduler's SIGTERM): exit 128 + signal.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum
