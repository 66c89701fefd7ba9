"""Is tonight normal? The night checks (--min_rows, --max_drift, --max_rows_change), the drift
exclusions (--drift_exclude) and the job's history, found at launch without a new service.

The launcher decides (pipeline.launch.nights): the checks' limits, the features left out of
drift, and the previous nights of the same job, which this module reads (`read_nights`) from the
manifests in the sibling output directories of the same `--output` pattern with `{run_date}`
(local or gs://; only directories holding this tool's manifest; only manifest.json and
quality.json are read, never predictions). The history is a small list carried in the commit
stage's plan; the commit stage, where the counts are final (also with --wait false on
Dataflow), evaluates the checks (`evaluate`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import logging
import statistics

from apache_beam.io.filesystems import FileSystems

from models.errors import is_unreachable, one_line
from pipeline.errors import RunFailed
from pipeline.history import MIN_PREVIOUS, night_brief
from pipeline.manifest import PRODUCER
from pipeline.output import MANIFEST, read_bytes, read_json

_LOG = logging.getLogger(__name__)

HISTORY_NIGHTS = 30  # at most this many previous nights are kept
HISTORY_DAYS = 90  # looked for among the run dates of this many days before tonight's
QUALITY = "quality.json"  # written into a night's DIR by pipeline.evaluate once labels arrive


@dataclasses.dataclass(frozen=True)
class Nights:
    """The night checks' limits (None: off) and the job's previous nights, oldest first.

    Attributes:
        min_rows: --min_rows.
        max_drift: --max_drift.
        max_rows_change: --max_rows_change.
        drift_exclude: --drift_exclude, the features left out of drift.
        history: the previous nights' briefs (pipeline.history.night_brief), oldest first.
        history_source: where the history came from ("manifests"), or why there is none.
        history_ignored: the sibling folders whose manifest is not counted, and why:
            [{"run_date", "folder", "reason"}], oldest first.
    """

    min_rows: int | None = None
    max_drift: float | None = None
    max_rows_change: float | None = None
    drift_exclude: tuple[str, ...] = ()
    history: tuple[dict, ...] = ()
    history_source: str = "none"
    history_ignored: tuple[dict, ...] = ()
    refuse_repeated_input: bool = False

    def limits(self) -> dict:
        return {
            "min_rows": self.min_rows,
            "max_drift": self.max_drift,
            "max_rows_change": self.max_rows_change,
        }

    def repeated(self, fingerprint: str | None) -> dict | None:
        """The latest previous night whose input content is tonight's: {"run_date", "run_id"}."""
        if not fingerprint:
            return None
        for brief in reversed(self.history):
            if brief.get("input_fingerprint") == fingerprint:
                return {"run_date": brief.get("run_date"), "run_id": brief.get("run_id")}
        return None


def night_dir(pattern: str, run_date: str) -> str:
    """The output directory of one night of an --output pattern."""
    return pattern.replace("{run_date}", run_date).rstrip("/")


def read_history(pattern: str, run_date: str, strict: bool = False) -> tuple[list[dict], str]:
    """The previous nights of the same --output pattern and where they came from (read_nights,
    without the folders it ignored)."""
    found, source, _ = read_nights(pattern, run_date, strict)
    return found, source


def read_nights(
    pattern: str, run_date: str, strict: bool = False
) -> tuple[list[dict], str, list[dict]]:
    """The previous nights of the same --output pattern: the briefs of the manifests (with their
    quality.json, when there) of this tool in the directories of the HISTORY_DAYS run dates
    before `run_date`, the latest HISTORY_NIGHTS, oldest first.

    A night is its run_id and its run_date, counted once, in the folder of its own date: a
    folder whose manifest says another run_date (a night's output copied under another date by
    hand), a run_id already counted, a manifest that is not this tool's or not a JSON object, or
    one that cannot be read is ignored, with a warning and the reason in the list returned. A
    folder without a manifest is no night (a gap). Each folder is looked up by its name (no
    listing, so a bucket holding months of predictions is never walked); when `strict` and a
    night's storage did not answer: RunFailed (exit 3). A quality.json of another run than the
    manifest's is not that night's.

    Returns:
        (the briefs, where they came from or why there are none, the folders ignored:
        [{"run_date", "folder", "reason"}] oldest first).
    """
    if "{run_date}" not in pattern:
        return [], "none: --output has no {run_date}, each night replaces the last", []
    tonight = datetime.date.fromisoformat(run_date)
    dates = [(tonight - datetime.timedelta(days=d)).isoformat() for d in range(1, HISTORY_DAYS + 1)]

    unanswered: list[str] = []

    def one(date: str) -> tuple[dict | None, str | None]:
        """The night in this date's folder (None: none), or why its manifest is ignored."""
        directory = night_dir(pattern, date)
        try:
            manifest, problem = _manifest(FileSystems.join(directory, MANIFEST))
            if manifest is None:
                return None, problem
            if manifest.get("run_date") != date:
                return None, (
                    f"its manifest is of the night of {manifest.get('run_date')!r} (run_id "
                    f"{manifest.get('run_id')}): a copy of another night's output, counted in "
                    "its own date's folder only"
                )
            quality = read_json(FileSystems.join(directory, QUALITY))
        except Exception as e:  # noqa: BLE001 - a night that cannot be read is not tonight's
            if strict and is_unreachable(e):
                unanswered.append(f"{date}: {one_line(e)}")
            return None, f"its manifest could not be read: {one_line(e)}"
        if isinstance(quality, dict) and quality.get("run_id") not in (None, manifest["run_id"]):
            quality = None  # labels of an earlier scoring of that night
        return night_brief(manifest, quality), None

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, dates))  # the latest first
    if unanswered:
        raise RunFailed(
            f"--max_rows_change needs the previous nights, and {len(unanswered)} of them could "
            f"not be read (storage did not answer), e.g. {unanswered[0]}"
        )
    found: list[dict] = []
    ignored: list[dict] = []
    counted: dict[str, str] = {}  # run_id: the date it is counted on
    for date, (brief, problem) in zip(dates, results):
        if brief is not None and brief["run_id"] in counted:
            brief, problem = (
                None,
                (
                    f"its run_id {brief['run_id']} is the night of {counted[brief['run_id']]}'s, "
                    "already counted"
                ),
            )
        if problem is not None:
            ignored.append(
                {"run_date": date, "folder": night_dir(pattern, date), "reason": problem}
            )
            _LOG.warning("history: the folder of %s is ignored: %s", date, problem)
        elif brief is not None and len(found) < HISTORY_NIGHTS:
            counted[brief["run_id"]] = date
            found.append(brief)
    return list(reversed(found)), "manifests", list(reversed(ignored))


def _manifest(path: str) -> tuple[dict | None, str | None]:
    """A folder's manifest of this tool (None, None: there is none), or why it is not one."""
    data = read_bytes(path)
    if data is None:
        return None, None
    try:
        manifest = json.loads(data)
    except ValueError as e:
        return None, f"its manifest.json is not valid JSON ({one_line(e)})"
    if not isinstance(manifest, dict):
        return None, f"its manifest.json is a JSON {type(manifest).__name__}, not an object"
    if manifest.get("producer") != PRODUCER:
        return None, "its manifest.json is not one of this tool's (no beamscore producer)"
    if not isinstance(manifest.get("run_id"), str):
        return None, "its manifest.json has no run_id"
    return manifest, None


def mlflow_history(decided) -> tuple[list[dict], str]:
    """The previous nights of the job from its MLflow runs (same experiment, same job name),
    for an --output without {run_date}; none, with a warning, when MLflow cannot be read."""
    from pipeline.lineage import job_name_for
    from pipeline.tracking import read_history as read_runs

    job = job_name_for(decided.output, decided.run_date)
    try:
        found = read_runs(
            decided.tracking_uri, decided.mlflow_experiment, job, decided.run_date, HISTORY_NIGHTS
        )
    except Exception as e:  # noqa: BLE001 - MLflow's own start says if it is gone
        _LOG.warning("history: could not read the MLflow runs of %s: %s", job, one_line(e))
        return [], "none: MLflow could not be read"
    return found, f"MLflow experiment {decided.mlflow_experiment}"


def evaluate(
    nights: Nights | None, rows_read: int, drift: dict | None, fingerprint: str | None = None
) -> tuple[list, list]:
    """The night checks on tonight's final counts (and tonight's input fingerprint).

    Returns:
        (failed checks, skipped checks): [{"check", "value", "limit", "message"}] and
        [{"check", "message"}].
    """
    failed: list[dict] = []
    skipped: list[dict] = []
    if nights is None:
        return failed, skipped
    if nights.min_rows is not None and rows_read < nights.min_rows:
        failed.append(
            {
                "check": "min_rows",
                "value": rows_read,
                "limit": nights.min_rows,
                "message": f"{rows_read:,} rows read, fewer than --min_rows {nights.min_rows:,}",
            }
        )
    if nights.max_drift is not None:
        over = sorted(
            ((k, v) for k, v in (drift or {}).items() if v is not None and v > nights.max_drift),
            key=lambda kv: -kv[1],
        )
        if over:
            names = ", ".join(f"{k} PSI {v:.3f}" for k, v in over)
            failed.append(
                {
                    "check": "max_drift",
                    "value": over[0][1],
                    "limit": nights.max_drift,
                    "message": f"drift above --max_drift {nights.max_drift}: {names}",
                }
            )
    repeated = nights.repeated(fingerprint) if nights.refuse_repeated_input else None
    if repeated is not None:
        failed.append(
            {
                "check": "refuse_repeated_input",
                "value": repeated["run_date"],
                "limit": True,
                "message": f"the input is the night of {repeated['run_date']}'s again (run "
                f"{repeated['run_id']}): the same content, file for file",
            }
        )
    if nights.max_rows_change is not None:
        previous = [b["rows_read"] for b in nights.history if isinstance(b.get("rows_read"), int)]
        if len(previous) < MIN_PREVIOUS:
            skipped.append(
                {
                    "check": "max_rows_change",
                    "message": f"skipped: {len(previous)} previous night(s) found "
                    f"({nights.history_source}), at least {MIN_PREVIOUS} needed",
                }
            )
        else:
            median = statistics.median(previous)
            change = (
                abs(rows_read - median) / median if median else (0.0 if not rows_read else None)
            )
            if change is None or change > nights.max_rows_change:
                failed.append(
                    {
                        "check": "max_rows_change",
                        "value": None if change is None else round(change, 6),
                        "limit": nights.max_rows_change,
                        "message": f"{rows_read:,} rows read against a median of {median:,.0f} "
                        f"over the previous {len(previous)} nights: "
                        + ("a change from none" if change is None else f"{change:.1%} change")
                        + f", more than --max_rows_change {nights.max_rows_change}",
                    }
                )
    return failed, skipped
