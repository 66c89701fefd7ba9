"""Delayed-label quality: `python -m pipeline.evaluate --predictions DIR --labels PATTERN
--label_column NAME [--key_columns a,b]`.

Joins a past night's committed predictions (DIR, local or gs://, a directory this tool owns) with
the labels that arrived later (Parquet, CSV or JSON Lines), by the night's key columns, and writes
DIR/quality.json with scikit-learn's metrics for the model's kind. The night's MLflow run (when its
manifest names one) gains the metrics, and an OpenLineage COMPLETE event is sent when lineage is on.

Keys are matched under the value rule (scoring.values.cast): a label's key is cast to the type
the night wrote the key with, losslessly or not at all; a label whose key or value cannot be cast
is a rejected label, counted with its reason, never a silent miss. Every label read and every
prediction is accounted for:

    rows_scored  == rows_labelled + rows_unmatched.predictions
    labels.rows_read == rows_labelled + rows_unmatched.labels + labels.rows_rejected

Exit codes as the scoring run's: 0 written, 2 refused before anything is written (one line),
3 what a retry can fix (storage or MLflow unreachable); never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from models.errors import is_unreachable, one_line
from pipeline.errors import ConfigError, RunFailed, report_bug
from pipeline.flags import Flag, OneLineParser, absolute, filled
from pipeline.labels import Kind, Labels, class_index, read_labels
from pipeline.launch.flags import parse_run_date
from pipeline.manifest import PRODUCER
from pipeline.output import COMMIT, MANIFEST, QUALITY, STAGING, list_files, read_json, write_json
from transforms.emulators import anonymous_if_emulated
from transforms.read import hinted
from transforms.sources import (
    FORMATS,
    open_raw,
)

_LOG = logging.getLogger("pipeline.evaluate")

USAGE = (
    "usage: python -m pipeline.evaluate --predictions DIR --labels PATTERN --label_column NAME "
    "[--key_columns a,b] [--labels_format parquet|csv|jsonl] [--mlflow_tracking_uri URI] "
    "[--openlineage_url URL] [--run_date YYYY-MM-DD] [--skip_missing]"
)
# The one list of the flags: argparse, --help and the docs' flag reference.
EVALUATE_FLAGS = (
    Flag(
        "predictions",
        "DIR",
        "the night's output directory (local or gs://), as `python -m pipeline.run --output` "
        "wrote it",
        required=True,
    ),
    Flag(
        "labels",
        "PATTERN",
        "the label files (local or gs:// pattern), Parquet, CSV or JSON Lines",
        required=True,
    ),
    Flag(
        "label_column",
        "NAME",
        "the column of the label files that holds the true value",
        required=True,
    ),  # fmt: skip
    Flag(
        "key_columns",
        "a,b",
        "the columns that match a label to its prediction (default: the night's key columns)",
    ),
    Flag("labels_format", "parquet|csv|jsonl", "default: from the file extension"),
    Flag(
        "mlflow_tracking_uri",
        "URI",
        "the MLflow server of the night's run (default: MLFLOW_TRACKING_URI); needed when the "
        "night's manifest names an MLflow run, which gains the metrics",
    ),
    Flag(
        "openlineage_url",
        "URL",
        "send an OpenLineage COMPLETE event to this server (default: OPENLINEAGE_URL)",
    ),
    Flag(
        "run_date",
        "YYYY-MM-DD",
        "fills {run_date} in --predictions and --labels (as in the scoring run's --output); the "
        "night's manifest must be of that date",
    ),
    Flag(
        "skip_missing",
        "",
        "when DIR holds no manifest.json at all (that night was never scored, e.g. a schedule's "
        "first weeks), say so and exit 0, writing nothing; without it that is exit 2",
    ),
)
HELP = "\n".join(
    [
        USAGE,
        "",
        "Joins a past night's predictions with the labels that arrived later and writes "
        "DIR/quality.json.",
        "",
        *(line for flag in EVALUATE_FLAGS for line in flag.help_lines()),
    ]
)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(add_help=False, allow_abbrev=False)
    for flag in EVALUATE_FLAGS:
        name = f"--{flag.name}"
        if flag.switch:
            p.add_argument(name, action="store_true")
        elif flag.name == "labels_format":
            p.add_argument(name, choices=FORMATS)
        else:
            p.add_argument(name, required=flag.required)
    return p


# ---------------------------------------------------------------------------------------------
# The night


def read_night(directory: str, missing_ok: bool = False) -> dict | None:
    """The night's manifest, once DIR is a committed output directory of this tool (None: DIR
    holds no manifest.json at all, and `missing_ok`)."""
    try:
        manifest = read_json(FileSystems.join(directory, MANIFEST))
        staged = list_files(FileSystems.join(directory, STAGING))
    except Exception as e:  # noqa: BLE001 - sorted into exit 2 or 3
        if is_unreachable(e):
            raise RunFailed(f"--predictions {directory}: cannot be read: {one_line(e)}") from e
        raise ConfigError(f"--predictions {directory}: cannot be read: {one_line(e)}") from e
    if manifest is None and missing_ok:
        return None
    if manifest is None or manifest.get("producer") != PRODUCER:
        raise ConfigError(
            f"--predictions {directory} holds no manifest.json of this tool: give the output "
            "directory of a night scored by python -m pipeline.run"
        )
    if any(f.endswith("/" + COMMIT) for f in staged):
        raise ConfigError(
            f"--predictions {directory}: a commit was left half done there; rerun that night's "
            "scoring command (it finishes the commit first), then evaluate"
        )
    if manifest.get("status") not in ("succeeded", "failed"):
        raise ConfigError(
            f"--predictions {directory}: its manifest has no committed status "
            f"({manifest.get('status')!r})"
        )
    return manifest


def read_predictions(directory: str, manifest: dict, keys: list[str]) -> pa.Table:
    """The night's key, prediction and proba_<class> columns, from the files its manifest
    names; their rows must be the manifest's rows_predicted."""
    import pyarrow.parquet as pq

    tables = []
    for name in manifest["outputs"]["predictions"]:
        path = FileSystems.join(directory, name)
        try:
            with open_raw(path) as f:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                wanted = [*keys, *(n for n in names if n == "prediction" or _is_proba(n))]
                tables.append(pf.read(columns=wanted))
        except Exception as e:  # noqa: BLE001 - a file gone or broken since the night
            if is_unreachable(e):
                raise RunFailed(f"cannot read {path}: {one_line(e)}") from e
            raise ConfigError(f"cannot read the night's predictions {path}: {one_line(e)}") from e
    if not tables:
        raise ConfigError(f"--predictions {directory}: the night wrote no predictions")
    table = pa.concat_tables(tables)
    expected = manifest["counts"]["rows_predicted"]
    if table.num_rows != expected:
        raise ConfigError(
            f"--predictions {directory}: its predictions hold {table.num_rows:,} rows, its "
            f"manifest says {expected:,}: the directory was changed after the night"
        )
    return table


def _is_proba(name: str) -> bool:
    return name.startswith("proba_")


def kind_of(predictions: pa.Table) -> Kind:
    """The model's kind from the night's columns: proba_<class> columns make a classifier
    (binary with two), a float prediction without them a regressor."""
    target = predictions.schema.field("prediction").type
    classes = tuple(n.removeprefix("proba_") for n in predictions.column_names if _is_proba(n))
    if len(classes) == 2:
        return Kind("binary", classes, target)
    if classes:
        return Kind("multiclass", classes, target)
    if pa.types.is_floating(target):
        return Kind("regressor", (), pa.float64())
    return Kind("classifier", (), target)


# ---------------------------------------------------------------------------------------------
# The join and the metrics


def join(predictions: pa.Table, labels: pa.Table, keys: list[str]) -> pa.Table:
    """The predictions that found their label (in the night's row order), with a `__label`
    column; a key held by several labels, or by several labelled predictions, is exit 2."""
    _unique(labels, keys, "labels")
    p = predictions.append_column("__p", pa.array(np.arange(predictions.num_rows)))
    lab = labels.rename_columns([*keys, "__label"])
    try:
        joined = p.join(lab, keys=keys, join_type="inner")
    except pa.ArrowNotImplementedError as e:
        types = ", ".join(f"{k} {predictions.schema.field(k).type}" for k in keys)
        raise ConfigError(f"cannot match labels by keys of these types ({types}): {e}") from e
    _unique(joined, keys, "labelled predictions of the night")
    return joined.sort_by("__p")


def _unique(table: pa.Table, keys: list[str], what: str) -> None:
    if not table.num_rows:
        return
    try:
        counts = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    except pa.ArrowNotImplementedError as e:
        raise ConfigError(f"cannot match labels by keys {', '.join(keys)}: {e}") from e
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        key = ", ".join(f"{k}={first[k]!r}" for k in keys)
        raise ConfigError(
            f"key ({key}) is held by {first['count_all']} {what} (and {repeated.num_rows - 1} "
            f"more key(s) repeat): a key must match one label and one prediction"
            if repeated.num_rows > 1
            else f"key ({key}) is held by {first['count_all']} {what}: a key must match one "
            "label and one prediction"
        )


def metrics(joined: pa.Table, kind: Kind) -> tuple[dict[str, float | None], dict[str, str]]:
    """scikit-learn's metrics of the labelled predictions, and why any is None."""
    from sklearn import metrics as m

    notes: dict[str, str] = {}
    if kind.name == "regressor":
        y = joined["__label"].to_numpy()
        pred = joined["prediction"].to_numpy()
        out = {
            "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
            "mae": float(m.mean_absolute_error(y, pred)),
            "r2": None,
        }
        if len(y) >= 2:
            out["r2"] = float(m.r2_score(y, pred))
        else:
            notes["r2"] = "needs at least two labelled predictions"
        return out, notes
    if not kind.classes:  # a classifier without probabilities: labels only
        y = np.asarray(joined["__label"].to_pylist(), dtype=object)
        pred = np.asarray(joined["prediction"].to_pylist(), dtype=object)
        return {"accuracy": float(np.mean(y == pred))}, notes
    y = class_index(joined["__label"], kind.classes)
    pred = class_index(joined["prediction"], kind.classes)
    proba = np.column_stack([joined[f"proba_{c}"].to_numpy() for c in kind.classes])
    labels = list(range(len(kind.classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an undefined metric is None with its note, not a warning
        out = {
            "accuracy": float(m.accuracy_score(y, pred)),
            "log_loss": float(m.log_loss(y, proba, labels=labels)),
        }
        if kind.name == "binary":
            if len(set(y.tolist())) == 2:
                out["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1]))
            else:
                out["roc_auc"] = None
                notes["roc_auc"] = "the labels hold one class only"
            for name, fn in (("precision", m.precision_score), ("recall", m.recall_score)):
                out[name] = float(fn(y, pred, pos_label=1, zero_division=0.0))
    return out, notes


# ---------------------------------------------------------------------------------------------
# The run


def evaluate(argv: list[str]) -> tuple[dict, str | None, list[str] | None]:
    """Writes DIR/quality.json; returns it, the MLflow run that gained the metrics (None: no
    MLflow run) and the OpenLineage events not sent (None: lineage is off)."""
    args, rest = _parser().parse_known_args(argv)
    if rest:
        raise ConfigError(f"unexpected argument(s) {' '.join(rest)} (see --help)")
    anonymous_if_emulated()
    started = datetime.datetime.now(datetime.UTC)
    run_date = None
    if args.run_date is not None or "{run_date}" in args.predictions + args.labels:
        if args.run_date is None:
            raise ConfigError("--predictions or --labels holds {run_date}: give --run_date")
        run_date = parse_run_date(args.run_date, started.date())
    directory = absolute(filled("--predictions", args.predictions, run_date or "")).rstrip("/")
    args.labels = absolute(filled("--labels", args.labels, run_date or ""))
    if directory.startswith("gs://"):
        from pipeline import gcs

        gcs.check_flag(directory, "--predictions")
    manifest = read_night(directory, missing_ok=args.skip_missing)
    if manifest is None:
        return {"predictions": directory}, None, None
    if run_date and manifest.get("run_date") != run_date:
        raise ConfigError(
            f"--predictions {directory} holds the night of {manifest.get('run_date')}, "
            f"not --run_date {run_date}"
        )
    night_keys = list(manifest.get("key_columns") or [])
    keys = _keys(args.key_columns, night_keys)
    label = args.label_column.strip()
    if label in keys:
        raise ConfigError(f"--label_column {label} is also a key column")
    tracker = _mlflow(manifest, args.mlflow_tracking_uri)  # refused before any work
    predictions = read_predictions(directory, manifest, keys)
    kind = kind_of(predictions)
    key_types = {k: predictions.schema.field(k).type for k in keys}
    labels = read_labels(args.labels, args.labels_format, keys, key_types, label, kind)
    joined = join(predictions, labels.table, keys)
    if not joined.num_rows:
        raise ConfigError(
            f"no prediction of {directory} found its label in {args.labels} "
            f"({labels.rows_read:,} labels read, {labels.rows_rejected:,} rejected"
            + (f", e.g. {labels.examples[0]['reason']}" if labels.examples else "")
            + f"; keys {', '.join(keys)}): is it the right night, and are these the keys?"
        )
    values, notes = metrics(joined, kind)
    valid = labels.table.num_rows
    quality = {
        "producer": PRODUCER,
        "run_id": manifest["run_id"],
        "run_date": manifest.get("run_date"),
        "night_status": manifest["status"],
        "model": {k: manifest["model"].get(k) for k in ("uri", "version")},
        "predictions": directory,
        "labels": args.labels,
        "labels_format": labels.fmt,
        "label_files": len(labels.files),
        "label_column": label,
        "key_columns": keys,
        "model_kind": kind.name,
        "rows_scored": predictions.num_rows,
        "rows_labelled": joined.num_rows,
        "rows_unmatched": {
            "predictions": predictions.num_rows - joined.num_rows,
            "labels": valid - joined.num_rows,
        },
        "labels_read": labels.rows_read,
        "labels_rejected": {"rows": labels.rows_rejected, "examples": labels.examples},
        "metrics": values,
        "evaluated_at": started.isoformat(),
    }
    differ = {
        k: {"night": str(key_types[k]), "labels": sorted(labels.key_types[k])}
        for k in keys
        if labels.key_types.get(k, set()) - {str(key_types[k])}
    }
    if differ:  # matched by the value rule: 7 and "7" match, "07" is a rejected label
        quality["key_casts"] = differ
    if kind.classes:
        quality["classes"] = list(kind.classes)
    if kind.name == "binary":
        quality["positive_class"] = kind.classes[1]
    if notes:
        quality["metric_notes"] = notes
    if tracker is not None:
        quality["mlflow_run_id"] = manifest["mlflow_run_id"]
    accounted = joined.num_rows + quality["rows_unmatched"]["labels"] + labels.rows_rejected
    if labels.rows_read != accounted:  # a bug: never a quality.json with labels lost
        raise RuntimeError(f"labels read {labels.rows_read:,} != accounted for {accounted:,}")
    path = FileSystems.join(directory, QUALITY)
    again = read_json(FileSystems.join(directory, MANIFEST)) or {}
    if again.get("run_id") != manifest["run_id"]:
        raise RunFailed(
            f"{directory} was scored again while it was evaluated; nothing written: evaluate again"
        )
    try:
        write_json(path, quality)
    except Exception as e:  # noqa: BLE001 - sorted into exit 2 or 3
        if is_unreachable(e):
            raise RunFailed(f"cannot write {path}: {one_line(e)}") from e
        raise ConfigError(f"cannot write {path}: {one_line(e)}") from e
    if tracker is not None:
        _log_to_mlflow(tracker, manifest["mlflow_run_id"], quality)
    return quality, quality.get("mlflow_run_id"), _lineage(args, manifest, quality, labels)


def _keys(given: str | None, night: list[str]) -> list[str]:
    if given is None:
        if not night:
            raise ConfigError(
                "the night wrote no key columns, so no label can be matched to a prediction"
            )
        return night
    keys = [k.strip() for k in given.split(",") if k.strip()]
    if not keys:
        raise ConfigError("--key_columns names no column")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--key_columns {given} names a column twice")
    unknown = [k for k in keys if k not in night]
    if unknown:
        raise ConfigError(
            f"--key_columns {hinted(unknown, night)}: not a key column of the night "
            f"(its keys: {', '.join(night) or 'none'})"
        )
    return keys


def _mlflow(manifest: dict, flag: str | None):
    """A client of the night's MLflow run, checked to exist (None: the night logged none)."""
    run_id = manifest.get("mlflow_run_id")
    if not run_id:
        return None
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(
            f"the night was logged to MLflow run {run_id}: give its server with "
            "--mlflow_tracking_uri or MLFLOW_TRACKING_URI, so the run gains the metrics"
        )
    from models.mlflow_models import client

    try:
        mlflow = client(uri)
        mlflow.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - sorted into exit 2 or 3
        if is_unreachable(e):
            raise RunFailed(f"MLflow tracking server unreachable: {one_line(e)}") from e
        raise ConfigError(f"MLflow run {run_id} of the night at {uri}: {one_line(e)}") from e
    return mlflow


def _log_to_mlflow(mlflow, run_id: str, quality: dict) -> None:
    """The metrics as `quality_<name>` (with the row counts) and quality.json as an artifact;
    a failure here is exit 3 (quality.json is written; evaluating again logs them)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {f"quality_{k}": v for k, v in quality["metrics"].items() if v is not None}
    values["quality_rows_labelled"] = quality["rows_labelled"]
    values["quality_rows_unmatched_predictions"] = quality["rows_unmatched"]["predictions"]
    values["quality_rows_unmatched_labels"] = quality["rows_unmatched"]["labels"]
    values["quality_labels_rejected"] = quality["labels_rejected"]["rows"]
    try:
        mlflow.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        mlflow.set_tag(run_id, "beamscore.quality_evaluated_at", quality["evaluated_at"])
        with tempfile.TemporaryDirectory() as tmp:
            write_json(os.path.join(tmp, QUALITY), quality)
            mlflow.log_artifact(run_id, os.path.join(tmp, QUALITY))
    except Exception as e:  # noqa: BLE001 - a retry logs them
        raise RunFailed(
            f"{QUALITY} is written, but MLflow run {run_id} did not take the metrics: "
            f"{one_line(e)}; evaluate again to log them"
        ) from e


def _lineage(args, manifest: dict, quality: dict, labels: Labels) -> list[str] | None:
    """One COMPLETE event of the evaluation job (the night's job name + `:evaluate`): the
    predictions and labels in, quality.json out (None: lineage is off)."""
    from pipeline.lineage import Dataset, Lineage, job_name_for

    run_date = manifest.get("run_date")
    lineage = Lineage(
        args.openlineage_url,
        job_name_for(quality["predictions"], run_date) + ":evaluate",
        f"evaluate-{manifest['run_id']}-{quality['evaluated_at']}",
        manifest["model"],
        run_date=run_date,
    )
    if not lineage.enabled:
        return None
    directory = quality["predictions"]
    lineage.complete(
        [
            Dataset(FileSystems.join(directory, "predictions"), rows=quality["rows_scored"]),
            Dataset(args.labels, rows=labels.rows_read, files=len(labels.files)),
        ],
        [Dataset(FileSystems.join(directory, QUALITY), rows=1, files=1)],
        "succeeded",
    )
    return lineage.not_sent


def summary(quality: dict, mlflow_run: str | None, lineage_not_sent: list[str] | None) -> str:
    """The lines a person reads."""
    q = quality
    shown = ", ".join(
        f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in q["metrics"].items()
    )
    lines = [
        f"EVALUATED: {q['rows_labelled']:,} of {q['rows_scored']:,} predictions labelled "
        f"({q['model_kind']}): {shown}",
        f"  predictions without a label: {q['rows_unmatched']['predictions']:,}; labels "
        f"matching no prediction: {q['rows_unmatched']['labels']:,}; labels rejected: "
        f"{q['labels_rejected']['rows']:,} of {q['labels_read']:,} read",
    ]
    for key, types in (q.get("key_casts") or {}).items():
        lines.append(
            f"  key {key}: the night wrote {types['night']}, the labels hold "
            f"{' and '.join(types['labels'])}: matched where a label's key converts exactly"
        )
    for example in q["labels_rejected"]["examples"][:3]:
        where = f"{example['source']}" + (f":{example['line']}" if "line" in example else "")
        lines.append(f"    rejected ({where}): {example['reason'][:200]}")
    lines.append(f"  quality:     {q['predictions']}/{QUALITY}")
    if mlflow_run:
        lines.append(f"  mlflow run:  {mlflow_run} (metrics quality_*)")
    if lineage_not_sent is not None:
        state = f"NOT sent ({', '.join(lineage_not_sent)})" if lineage_not_sent else "sent"
        lines.append(f"  lineage:     {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(HELP)
        return 0
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("apache_beam", "google", "urllib3", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's and scikit-learn's; our lines say it all
            quality, mlflow_run, not_sent = evaluate(argv)
    except (ConfigError, RunFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; quality.json is as it was", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line for the person, the trace in a file
        return report_bug(e)
    if "metrics" not in quality:  # --skip_missing, and no night there
        print(f"nothing to evaluate: {quality['predictions']} holds no night (no manifest.json)")
        return 0
    print(summary(quality, mlflow_run, not_sent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
