"""The job's own flags, as a PipelineOptions subclass (same flags on every runner and template).

`FLAGS` is the one list of them: argparse, `--help` and docs/reference/flags.md describe the same
flags (a test holds templates/metadata.json to it too).
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.flags import MODEL_FLAGS, Flag

# The environment variable that changes --wait's default (templates/Dockerfile sets it to false).
WAIT_VARIABLE = "BEAMSCORE_WAIT"


FLAGS = (
    Flag(
        "input",
        "PATTERN",
        "input files, local or gs:// (*, ?, [..], **), or a BigQuery table "
        "bq://project.dataset.table (read through the Storage Read API); may contain {run_date}. "
        "Quote it, so the shell does not expand it",
        required=True,
    ),
    Flag(
        "input_filter",
        "EXPR",
        "with a bq:// input: the rows to read, a BigQuery SQL boolean expression on the table's "
        "columns (the Storage Read API's row restriction), e.g. \"event_date = '{run_date}'\"; "
        "{run_date} is filled (default: the whole table)",
    ),
    Flag(
        "input_format",
        "FORMAT",
        "parquet, csv or jsonl (default: from the file extension: .parquet/.pq, .csv/.tsv, "
        ".jsonl/.json/.ndjson; compressed with .gz, .bz2, .zst, .deflate, .xz or .lzma)",
    ),
    Flag(
        "input_encoding",
        "NAME",
        "text encoding of CSV and JSON Lines input (utf-8, latin-1, cp1252, ...); a UTF-8 BOM is "
        "skipped",
        default="utf-8",
    ),
    Flag(
        "csv_delimiter",
        "CHAR",
        "field separator of CSV input (e.g. ';' or 'tab'); when not given, a tab for .tsv "
        "files (compressed or not) and a comma for the others",
    ),
    MODEL_FLAGS["model"],
    MODEL_FLAGS["model_sha256"],
    MODEL_FLAGS["allow_version_mismatch"],
    Flag(
        "output",
        "DIR",
        "output directory, local or gs://; may contain {run_date}",
        required=True,
    ),
    Flag(
        "key_columns",
        "A,B",
        "input columns copied into every prediction row (default: every input column that is "
        "not a model feature)",
    ),
    MODEL_FLAGS["features"],
    MODEL_FLAGS["column_types"],
    MODEL_FLAGS["unknown_categories"],
    Flag(
        "max_error_rate",
        "R",
        "fraction of rows (0 to 1) that may be rejected before the run counts as failed",
        default="0",
    ),
    MODEL_FLAGS["explain"],
    Flag(
        "min_rows",
        "N",
        "a night check: fewer than N rows read fails the night (exit 1, status failed, the "
        "output still committed) (default: off)",
    ),
    Flag(
        "max_drift",
        "PSI",
        "a night check: any feature's drift (PSI against the model's baseline) above it fails "
        "the night; a model without a drift baseline is refused (default: off)",
    ),
    Flag(
        "max_rows_change",
        "R",
        "a night check: rows read differing from the median of the previous nights of the same "
        "--output pattern by more than this fraction (0.5: half) fails the night; skipped with "
        "fewer than 3 previous nights (default: off)",
    ),
    Flag(
        "drift_exclude",
        "A,B",
        "features left out of drift (calendar-like columns such as month, day), recorded in the "
        "manifest",
    ),
    Flag(
        "refuse_repeated_input",
        "",
        "a night check: an input whose content is a previous night's of the same --output "
        "pattern (the feed sent that night's data again) fails the night, naming that night; "
        "without it such a night is marked in the manifest and the report",
    ),
    Flag("run_date", "YYYY-MM-DD", "fills {run_date} (default: today, UTC)"),
    Flag("batch_size", "N", "rows per Arrow record batch", default="65536"),
    Flag(
        "bigquery_table",
        "P.D.T",
        "also load a succeeded run's predictions into this BigQuery table, one partition per "
        "run date",
    ),
    Flag(
        "bigquery_errors_table",
        "P.D.T",
        "also load the errors output of every run that completed into this BigQuery table",
    ),
    MODEL_FLAGS["mlflow_tracking_uri"],
    Flag(
        "mlflow_experiment",
        "NAME",
        "log this run to MLflow in this experiment (default: MLFLOW_EXPERIMENT_NAME)",
    ),
    Flag(
        "wait",
        "true|false",
        "true: the launcher waits for the job, then exits with its code (0, 1 or 3); false: it "
        "returns (exit 0) as soon as the job is submitted, printing the job and where its "
        "manifest will appear: the job commits its output and releases DIR's lock itself (what "
        "a Flex Template launcher must use; its image sets BEAMSCORE_WAIT=false, which changes "
        "this default). On the DirectRunner, which runs the job to its end before it returns, "
        "false says the night's outcome and exits with its code, as true does",
        default="true",
    ),
    Flag(
        "openlineage_url",
        "URL",
        "send OpenLineage run events (START, COMPLETE/FAIL) to this server (default: "
        "OPENLINEAGE_URL)",
    ),
)

USAGE = (
    "usage: python -m pipeline.run --input PATTERN --model URI --output DIR [options] "
    "[Beam pipeline options]"
)

_EPILOG = """\
Beam pipeline options pass through: --runner (default DirectRunner), --direct_num_workers,
--direct_running_mode, --project, --region, --temp_location, --max_num_workers, ... (all of
them: https://beam.apache.org/releases/pydoc/current/apache_beam.options.pipeline_options.html).
Words that belong to no flag (an unquoted glob the shell expanded) are refused.

exit codes: 0 succeeded; 1 completed, but too many rows were rejected or a file could not be
read (look at DIR/errors); 2 bad configuration or input, found before scoring (nothing written);
3 could not complete, the previous output is intact (a retry may help); 4 internal error (a bug:
the traceback is in a file named on stderr); 130/143 interrupted (SIGINT/SIGTERM), the previous
output is intact.
See README.md and docs/ for the output layout, reruns, BigQuery, MLflow and Dataflow."""


def help_text() -> str:
    """What `--help` prints: every flag with its meaning and default, then Beam's pointer."""
    lines = [
        USAGE,
        "",
        "Scores tabular records with a trained model, columnar, on Apache Beam.",
        "",
    ]
    for flag in FLAGS:
        lines += flag.help_lines()
    lines += ["", _EPILOG]
    return "\n".join(lines)


class ScoringOptions(PipelineOptions):
    """Flags of `python -m pipeline.run` (see ../shared/CONTRACT.md and the README)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # Values are checked by the launcher (pipeline.launch), not argparse, so a bad or
        # missing one is one line on stderr and exit 2, not a usage dump.
        for flag in FLAGS:
            if flag.switch:  # --name alone, or --name=true|false (a Flex Template parameter)
                parser.add_argument(
                    f"--{flag.name}", nargs="?", const="true", default="false", help=flag.help
                )
            else:
                default = flag.default
                if flag.name == "wait":  # the Flex Template image sets BEAMSCORE_WAIT=false
                    default = os.environ.get(WAIT_VARIABLE) or default
                parser.add_argument(f"--{flag.name}", default=default, help=flag.help)


def wait_for_job(options: ScoringOptions) -> bool:
    """--wait: whether the launcher waits for the job (true) or returns once it is submitted."""
    value = str(options.wait).strip().lower()
    if value not in ("true", "false"):
        from pipeline.errors import ConfigError

        raise ConfigError(f"--wait must be true or false, not {options.wait!r}")
    return value == "true"
