"""The launcher's failure kinds, each with the exit code of the contract.

Anything else that escapes (a bug) is exit 4: see pipeline.run.main.
"""

import contextlib
import signal
import sys
import tempfile
import traceback

from models.errors import ModelError, ModelServiceUnreachable, one_line
from scoring.decide import Refused


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


@contextlib.contextmanager
def refusals():
    """The scoring core's refusals as the launcher's exit codes: what cannot be scored as asked
    is a ConfigError (exit 2), a model service that does not answer a RunFailed (exit 3)."""
    try:
        yield
    except (Refused, ModelError) as e:
        raise ConfigError(str(e)) from e
    except ModelServiceUnreachable as e:
        raise RunFailed(str(e)) from e


def report_bug(e: BaseException, more: str = "") -> int:
    """For an exception nobody expected (a bug): one line on stderr naming it and the file
    that holds its traceback (`more` appended after a semicolon); returns exit code 4.

    Call it from inside the `except` block: the traceback is the one being handled.
    """
    with tempfile.NamedTemporaryFile(
        "w", prefix="beamscore-traceback-", suffix=".txt", delete=False
    ) as f:
        traceback.print_exc(file=f)
    print(
        f"error: internal error (a bug in beamscore, please report it): "
        f"{one_line(e, with_type=True)}; traceback in {f.name}" + (f"; {more}" if more else ""),
        file=sys.stderr,
    )
    return 4
