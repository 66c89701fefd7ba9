"""The launch's night decisions: the night checks' limits, the features left out of drift, and
the job's previous nights (pipeline.nights reads them; the commit stage evaluates the checks)."""

from __future__ import annotations

import dataclasses

from pipeline.errors import ConfigError
from pipeline.flags import absolute, bounded_number, name_list, switch
from pipeline.nights import Nights, mlflow_history, read_nights


def decide(opts, decided):
    """The night checks and the history of a launch; refuses (exit 2) a bad value, a
    --drift_exclude naming no feature, --max_drift for a model without a drift baseline.

    Args:
        opts: the parsed flags (pipeline.options.ScoringOptions).
        decided: the launch decisions (pipeline.launch.Launch).

    Returns:
        (the launch, its drift baseline without the excluded features; Nights).
    """

    def number(flag: str, kind: type, low: float, high: float):
        value = getattr(opts, flag, None)
        return None if value is None else bounded_number(f"--{flag}", value, kind, low, high)

    min_rows = number("min_rows", int, 0, 2**63 - 1)
    max_drift = number("max_drift", float, 0.0, 1e9)
    max_rows_change = number("max_rows_change", float, 0.0, 1e9)
    exclude = name_list("--drift_exclude", getattr(opts, "drift_exclude", None)) or ()
    spec = decided.spec
    unknown = [name for name in exclude if name not in spec.features]
    if unknown:
        raise ConfigError(
            f"--drift_exclude {', '.join(unknown)}: not a feature of the model "
            f"(its features: {', '.join(spec.features)})"
        )
    baseline = spec.baseline
    if exclude and baseline:
        baseline = {k: v for k, v in baseline.items() if k not in exclude} or None
        decided = dataclasses.replace(decided, spec=dataclasses.replace(spec, baseline=baseline))
    if max_drift is not None and not baseline:
        why = "every feature it has one for is excluded" if spec.baseline else "it has none"
        raise ConfigError(
            f"--max_drift needs the model's drift baseline, and {spec.model.uri} has none "
            f"usable ({why}): drop --max_drift or score a model saved with a baseline"
        )
    # A check that needs the previous nights may not be skipped because storage did not answer.
    strict = max_rows_change is not None
    history, source, ignored = read_nights(absolute(opts.output), decided.run_date, strict)
    if not history and "{run_date}" not in opts.output and decided.mlflow_experiment:
        history, source = mlflow_history(decided)
    nights = Nights(
        min_rows=min_rows,
        max_drift=max_drift,
        max_rows_change=max_rows_change,
        drift_exclude=tuple(exclude),
        history=tuple(history),
        history_source=source,
        history_ignored=tuple(ignored),
        refuse_repeated_input=switch(
            "--refuse_repeated_input", getattr(opts, "refuse_repeated_input", None)
        ),
    )
    return decided, nights
