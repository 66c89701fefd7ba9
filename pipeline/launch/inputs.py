"""The launch's inputs: the files --input matches (or a BigQuery table's read session), their
format, and the first readable file's sample, which decides the columns' types."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models.errors import is_unreachable, one_line
from pipeline import gcs
from pipeline.errors import ConfigError, RunFailed, refusals
from pipeline.launch.flags import Flags
from pipeline.options import ScoringOptions
from scoring import decide
from transforms import bqread
from transforms.read import hinted
from transforms.samples import sample
from transforms.sources import (
    FORMATS,
    FileUnreadable,
    Outputs,
    fingerprint,
    format_of,
    one_name_each,
    partition_values,
    with_partitions,
)

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The matched input files, their format, and the first readable file's sample."""

    files: tuple[str, ...]
    fmt: str
    first: pa.Table | None  # None: every input file is empty
    first_path: str | None
    fingerprints: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    table: Any = None  # a BigQuery table input's read session (transforms.bqread.TableInput)
    partitions: tuple[str, ...] = ()  # the first file's name=value folders: text columns


def match_files(pattern: str, flag: str) -> dict:
    """The files (not directories) a pattern matches: their metadata by path. A pattern that
    cannot be listed is exit 2, or exit 3 when its storage does not answer."""
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - a bad pattern or unreachable bucket
        if is_unreachable(e):
            raise RunFailed(f"cannot list {flag} {pattern}: {one_line(e)}") from e
        raise ConfigError(f"cannot list {flag} {pattern}: {one_line(e)}") from e
    return {m.path: m for m in matched if not m.path.endswith("/")}


def match_inputs(flags: Flags) -> Inputs:
    """Matches --input (without the output directory's files) and samples the first file."""
    pattern = flags.input_pattern
    if pattern.startswith("gs://"):
        gcs.check_flag(pattern, "--input")
    elif os.path.isdir(pattern):
        raise ConfigError(
            f"--input {pattern} is a directory: give a pattern of its files, e.g. "
            f"'{pattern.rstrip('/')}/*.parquet'"
        )
    metas = match_files(pattern, "--input")
    every = sorted(metas)
    outputs = Outputs(flags.output)
    skipped = {f for f in every if outputs.holds(f)}
    files = one_name_each(f for f in every if f not in skipped)
    if aliases := len(every) - len(skipped) - len(files):
        _LOG.info("%d matched name(s) are another name of a matched file: read once", aliases)
    fingerprints = {f: fingerprint(metas[f]) for f in files}
    if not every:
        raise ConfigError(f"no input file matches {pattern}")
    if not files:
        raise ConfigError(
            f"every file matching {pattern} lies under --output {flags.output} or another "
            "output directory of this tool; a run never reads its own output"
        )
    if skipped:
        _LOG.info(
            "not reading %d file(s) of output directories (this run's %s, or earlier runs')",
            len(skipped),
            flags.output,
        )
    fmt = flags.input_format or format_of(pattern) or format_of(files[0])
    if fmt not in FORMATS:
        raise ConfigError(
            f"cannot tell the input format of {files[0]}; give --input_format parquet|csv|jsonl"
        )
    problem = None
    headed = None  # the first file with columns but no rows: an empty file decides nothing
    for path in files:
        try:
            table = sample(path, fmt, flags.text)
        except FileUnreadable as e:
            problem = problem or e
            continue
        if table.num_columns:
            check_unique_names(table.column_names, path)
            names = _partitions(table, path)
            table = with_partitions(table, path, names)
            if table.num_rows:
                return Inputs(files, fmt, table, path, fingerprints, partitions=names)
            headed = headed or (table, path, names)
    if headed is not None:
        return Inputs(files, fmt, headed[0], headed[1], fingerprints, partitions=headed[2])
    if problem is not None:
        raise ConfigError(str(problem))
    _LOG.warning("every input file is empty (%d file(s)): the run reads 0 rows", len(files))
    return Inputs(files, fmt, None, None, fingerprints)


def _partitions(table: pa.Table, path: str) -> tuple[str, ...]:
    """The name=value folders of the file's path that are columns (not inside the file); a
    name the file holds too is read from the file, and refused when its values differ."""
    folders = partition_values(path)
    for name, value in folders.items():
        if name not in table.column_names:
            continue
        held = table.column(name).drop_null()
        try:
            spelled = set(held.cast(pa.string()).to_pylist()) if len(held) else set()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            spelled = {f"a {held.type} value"}
        if spelled - {value}:
            shown = ", ".join(repr(v) for v in sorted(spelled - {value})[:3])
            raise ConfigError(
                f"column {name} is both the folder {name}={value} of {path} and a column of "
                f"the file holding {shown}: rename one of them"
            )
    return tuple(n for n in folders if n not in table.column_names)


# The BigQuery types a feature may have: what the model takes (numbers, booleans, text).
_FEATURE_TYPES = {
    "INTEGER",
    "INT64",
    "FLOAT",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOLEAN",
    "BOOL",
    "STRING",
}


def table_columns(flags: Flags) -> dict[str, str]:
    """A BigQuery table input's columns and their BigQuery types (exit 2: no such table, or
    one the Storage Read API cannot read; exit 3: BigQuery unreachable)."""
    try:
        names, types = bqread.table_columns(flags.input_pattern)
    except bqread.TableRefused as e:
        raise ConfigError(str(e)) from e
    except bqread.TableUnreachable as e:
        raise RunFailed(str(e)) from e
    return {name: types[name] for name in names}


def streams_wanted(opts: ScoringOptions, runner) -> int:
    """How many streams to ask a read session for: a few per worker the runner was asked for
    (else the runner's default: pipeline.runners.Runner.default_streams)."""
    flags = opts.get_all_options()
    workers = flags.get("max_num_workers") or flags.get("num_workers")
    if workers:
        return min(4 * int(workers), 1000)
    return runner.default_streams(flags)


def open_table(flags: Flags, model: decide.Model, types: dict[str, str], streams: int) -> Inputs:
    """A BigQuery table input: the columns the run needs are checked against the table, then
    the run's read session is created (only those columns, --input_filter as its row
    restriction) and its first rows sampled, as a file's are."""
    uri = flags.input_pattern
    names = list(types)
    with refusals():
        features = decide.choose_features(model, flags.features)
    missing = [f for f in features if f not in types]
    if missing:
        raise ConfigError(
            f"BigQuery table {uri} lacks model feature column(s): {hinted(missing, names)}"
        )
    keys = flags.keys if flags.keys is not None else tuple(c for c in names if c not in features)
    absent = [k for k in keys if k not in types]
    if absent:
        raise ConfigError(f"BigQuery table {uri} lacks key column(s): {hinted(absent, names)}")
    bad = {
        f: types[f]
        for f in features
        if types[f].upper() not in _FEATURE_TYPES and f not in flags.overrides
    }
    if bad:
        listed = ", ".join(f"{f} ({t})" for f, t in bad.items())
        raise ConfigError(
            f"BigQuery table {uri}: feature column(s) {listed} are of a type the model cannot "
            "take (numbers, booleans or text); convert them in a table the run reads"
        )
    wanted = list(dict.fromkeys(keys + features))
    try:
        table, first = bqread.create_session(uri, wanted, flags.input_filter or "", streams)
        if 0 < len(table.streams) < streams:  # more work units than the service handed out
            split = bqread.split_streams(bqread.read_client(), table.streams, streams)
            table = dataclasses.replace(table, streams=split)
    except bqread.TableRefused as e:
        raise ConfigError(str(e)) from e
    except bqread.TableUnreachable as e:
        raise RunFailed(str(e)) from e
    except Exception as e:  # noqa: BLE001 - SplitReadStream: sorted like the rest
        if is_unreachable(e):
            raise RunFailed(f"BigQuery is unreachable: {one_line(e)}") from e
        raise ConfigError(f"BigQuery table {uri}: {one_line(e)}") from e
    if not first.num_rows:
        where = (
            f"--input_filter {flags.input_filter!r} selects no rows of"
            if flags.input_filter
            else "no rows in"
        )
        _LOG.warning("%s BigQuery table %s: the run reads 0 rows", where, uri)
    _LOG.info(
        "BigQuery table %s: read session %s, %d stream(s), snapshot %s",
        uri,
        table.session,
        len(table.streams),
        table.snapshot_time,
    )
    return Inputs((uri,), "bigquery", first, uri, {uri: (0, 0)}, table)


def check_unique_names(names: list[str], path: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"input {path} has the column name {name!r} more than once")
        seen.add(name)
