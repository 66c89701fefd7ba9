"""The launcher's failure kinds, each with its exit code."""


class ConfigError(Exception):
    """Bad configuration or input found before any row is scored: exit 2, one line."""

    exit_code = 2


class RunFailed(Exception):
    """The run could not complete (worker crash, unreachable sink or service): exit 3."""

    exit_code = 3
