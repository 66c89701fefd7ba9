"""The launcher's failure kinds, each with its exit code."""


class ConfigError(Exception):
    """Bad configuration or input found before any row is scored: exit 2, one line."""

    exit_code = 2


class RunFailed(Exception):
    """The run could not complete (worker crash, unreachable sink or service): exit 3."""

    exit_code = 3


def one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for a one-line report.

    A Google API error's own `message` is used when it has one (its str() adds the HTTP verb
    and URL); an exception without text is named by its type.
    """
    text = str(getattr(e, "message", None) or e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
