"""The job's own flags, as a PipelineOptions subclass (same flags on every runner and template)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class ScoringOptions(PipelineOptions):
    """Flags of `python -m pipeline.run` (see ../shared/CONTRACT.md and the README)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # Values are checked by the launcher (pipeline.prepare), not argparse, so a bad or
        # missing one is one line on stderr and exit 2, not a usage dump.
        parser.add_argument("--input", help="file pattern, local or gs://; may contain {run_date}")
        parser.add_argument(
            "--input_format",
            help="default: from the file extension (.parquet, .csv, .jsonl/.json, optionally .gz)",
        )
        parser.add_argument("--model", help="model file (.joblib/.pkl), local or gs://")
        parser.add_argument("--model_sha256", help="refuse a model file whose SHA-256 differs")
        parser.add_argument(
            "--output", help="output directory, local or gs://; may contain {run_date}"
        )
        parser.add_argument(
            "--key_columns",
            help="input columns copied into every prediction row "
            "(default: every non-feature column)",
        )
        parser.add_argument("--features", help="feature columns (default: the model's own)")
        parser.add_argument(
            "--column_types",
            help="override the type decided for input columns: name:type,... "
            "(types: float64, int64, bool, string)",
        )
        parser.add_argument(
            "--max_error_rate",
            default="0",
            help="fraction of rows that may be rejected before the run counts as failed "
            "(default 0)",
        )
        parser.add_argument("--run_date", help="YYYY-MM-DD (default: today, UTC); fills {run_date}")
        parser.add_argument(
            "--batch_size", default="65536", help="rows per record batch (default 65536)"
        )
        parser.add_argument("--bigquery_table", help="also load predictions into this table")
        parser.add_argument(
            "--bigquery_errors_table", help="also load the errors output into this table"
        )
        parser.add_argument("--mlflow_tracking_uri", help="MLflow tracking/registry server")
        parser.add_argument("--mlflow_experiment", help="log this run to MLflow in this experiment")
