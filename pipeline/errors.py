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
    """The run could not complete (worker crash, unreachable sink or service): exit 3.

    Attributes:
        told: the observers (MLflow, OpenLineage) were told of this failure already, by the
            commit stage that failed: the launcher does not tell them again.
    """

    exit_code = 3

    def __init__(self, message: str = "", *, told: bool = False):
        super().__init__(message)
        self.told = told


class Interrupted(BaseException):
    """The run was stopped by a signal (a scheduler's SIGTERM): exit 128 + signal.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


class RunEnded(BaseException):
    """A run that a stop signal or a bug ended once its output directory was locked.

    A BaseException, like the signals it carries, so that no `except Exception` on the way
    swallows it.

    Attributes:
        error: the exception the run ended in (KeyboardInterrupt, Interrupted, or a bug).
        dir_state: what the output directory holds of this run: "committed" (its manifest is
            the directory's), "half" (its commit journal is written, the commit not finished),
            "none" (the previous output is intact) or "unknown" (it could not be read).
        path: the output directory.
    """

    def __init__(self, error: BaseException, dir_state: str, path: str):
        super().__init__(str(error))
        self.error = error
        self.dir_state = dir_state
        self.path = path


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
    that holds its traceback (`more` appended after a semicolon); returns exit code 4."""
    with tempfile.NamedTemporaryFile(
        "w", prefix="beamscore-traceback-", suffix=".txt", delete=False
    ) as f:
        traceback.print_exception(e, file=f)
    print(
        f"error: internal error (a bug in beamscore, please report it): "
        f"{one_line(e, with_type=True)}; traceback in {f.name}" + (f"; {more}" if more else ""),
        file=sys.stderr,
    )
    return 4
