"""The labels of a past night, read for pipeline.evaluate: every label file of a pattern, its
keys cast to the night's key types and its label as the model's kind takes it, value by value
under the value rule (scoring.values); a label that cannot be is rejected, counted, with
examples.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.errors import is_unreachable, one_line
from pipeline.errors import ConfigError, RunFailed
from pipeline.launch.inputs import match_files
from scoring.values import cast, mask
from transforms.read import hinted
from transforms.samples import csv_header, json_array_message
from transforms.sources import (
    FORMATS,
    INT96_UNIT,
    FileUnreadable,
    format_of,
    is_tsv,
    open_input,
    open_raw,
)
from transforms.spec import TextFormat
from transforms.textblocks import RecordBlocks
from transforms.textread import parse_csv, parse_jsonl

# Rejected labels kept as examples in quality.json.
EXAMPLES = 5


@dataclasses.dataclass
class Labels:
    """The labels read: valid ones (keys in the night's types, the label as the model's kind
    takes it) and the rejected ones, counted with examples."""

    table: pa.Table
    files: list[str]
    fmt: str
    rows_read: int = 0
    rows_rejected: int = 0
    examples: list[dict] = dataclasses.field(default_factory=list)
    key_types: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # as read

    def reject(self, count: int, source: str, reason: str, line: int | None = None) -> None:
        self.rows_rejected += count
        if len(self.examples) < EXAMPLES:
            example = {"source": source, "reason": reason}
            if line is not None:
                example["line"] = line
            self.examples.append(example)


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the night's model predicts, as its prediction columns say.

    Attributes:
        name: binary, multiclass, classifier (labels only, no probabilities) or regressor.
        classes: the class names of the proba_<class> columns, in their order.
        target: the type a label is cast to (the prediction's).
    """

    name: str
    classes: tuple[str, ...]
    target: pa.DataType


def read_labels(
    pattern: str, fmt: str | None, keys: list[str], key_types: dict, label: str, kind: Kind
) -> Labels:
    """Every label file of the pattern, its keys cast to the night's key types and its label to
    what the model's kind takes; values that cannot be are rejected labels."""
    if pattern.startswith("gs://"):
        from pipeline import gcs

        gcs.check_flag(pattern, "--labels")
    files = sorted(match_files(pattern, "--labels"))
    if not files:
        raise ConfigError(f"no label file matches --labels {pattern}")
    fmt = fmt or format_of(pattern) or format_of(files[0])
    if fmt not in FORMATS:
        raise ConfigError(
            f"cannot tell the format of {files[0]}; give --labels_format parquet|csv|jsonl"
        )
    text = TextFormat(delimiter="\t" if is_tsv(pattern) else ",")
    wanted = [*keys, label]
    out = Labels(pa.table({}), files, fmt)
    typed = []
    for path in files:
        try:
            for block in _blocks(path, fmt, wanted, keys, text, out):
                typed.append(_typed(block, path, keys, key_types, label, kind, out))
        except FileUnreadable as e:
            raise ConfigError(str(e)) from e
        except (ConfigError, RunFailed):
            raise
        except Exception as e:  # noqa: BLE001 - sorted into exit 2 or 3
            if is_unreachable(e):
                raise RunFailed(f"cannot read {path}: {one_line(e)}") from e
            raise ConfigError(f"cannot read {path} as {fmt}: {one_line(e)}") from e
    schema = pa.schema(
        [*(pa.field(k, key_types[k]) for k in keys), pa.field(label, _label_type(kind))]
    )
    out.table = pa.concat_tables([t.cast(schema) for t in typed]) if typed else schema.empty_table()
    return out


def _missing(path: str, wanted: list[str], names: list[str], keys: list[str]) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        what = "label column" if missing == [wanted[-1]] else "key/label column(s)"
        hint = "" if what == "label column" else " (choose the keys with --key_columns)"
        raise ConfigError(f"label file {path} lacks {what} {hinted(missing, names)}{hint}")


def _blocks(path: str, fmt: str, wanted: list[str], keys: list[str], text: TextFormat, out):
    """A label file's records as tables of the wanted columns, as the scoring readers parse
    them (CSV as text, JSON values of their own kinds); malformed records are rejected."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with open_raw(path) as f:
            if not f.read(1):
                return
            f.seek(0)
            pf = pq.ParquetFile(f, coerce_int96_timestamp_unit=INT96_UNIT)
            _missing(path, wanted, pf.schema_arrow.names, keys)
            for batch in pf.iter_batches(batch_size=65536, columns=wanted):
                out.rows_read += batch.num_rows
                yield pa.Table.from_batches([batch])
        return
    if fmt == "csv":
        names = csv_header(path, text)
        if not names:
            return
        _missing(path, wanted, list(names), keys)
        types = {c: pa.string() for c in wanted}
        with open_input(path) as stream:
            for block in RecordBlocks(
                stream, 0, None, quoted=True, header=True, delimiter=text.delimiter
            ):
                parsed = parse_csv(
                    block.data, block.first_line, names, wanted, types, text, dict.fromkeys(keys)
                )
                out.rows_read += parsed.table.num_rows + len(parsed.rejected)
                for r in parsed.rejected:
                    out.reject(1, path, r.reason, r.line)
                yield parsed.table
        return
    seen: set[str] = set()
    rows = 0
    with open_input(path) as stream:
        for block in RecordBlocks(stream, 0, None, quoted=False):
            if not rows and block.data.lstrip().startswith(b"["):
                raise FileUnreadable(json_array_message(path))
            parsed = parse_jsonl(block.data, block.first_line, text, exact=None)
            out.rows_read += parsed.table.num_rows + len(parsed.rejected)
            for r in parsed.rejected:
                out.reject(1, path, r.reason, r.line)
            table = parsed.table
            rows += table.num_rows
            seen.update(c for c in wanted if c in table.column_names)
            yield pa.table(
                {
                    c: table.column(c) if c in table.column_names else pa.nulls(table.num_rows)
                    for c in wanted
                }
            )
    if rows:  # a field no record holds is a column the file lacks (as for scoring)
        _missing(path, wanted, sorted(seen), keys)


def _label_type(kind: Kind) -> pa.DataType:
    return pa.float64() if kind.name == "regressor" else kind.target


def _typed(
    block: pa.Table, path: str, keys: list[str], key_types: dict, label: str, kind: Kind, out
) -> pa.Table:
    """A block's keys in the night's types and its label as the kind takes it, value by value
    (scoring.values.cast); a row with any value that cannot be is a rejected label."""
    n = block.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons: list[tuple[np.ndarray, str, pa.Array]] = []
    columns = {}
    for name in [*keys, label]:
        is_label = name == label
        if not is_label and not pa.types.is_null(block.column(name).type):
            out.key_types.setdefault(name, set()).add(str(block.column(name).type))
        target = _label_type(kind) if is_label else key_types[name]
        column = block.column(name)
        if is_label and kind.classes and pa.types.is_integer(target):
            column = _whole_numbers(column)
        # A class is an identity, like a key (written back as spelled); a regressor's label a
        # number, like a feature.
        done = cast(
            column,
            target,
            key=not (is_label and kind.name == "regressor"),
            name=f"label {name}" if is_label else name,
        )
        values = done.values
        for failed, reason in done.failures:
            if is_label and kind.classes:  # not of the classes' type: not one of the classes
                reason = f"label {name}: {{!r}} is not one of the model's classes "
                reason += f"({', '.join(kind.classes)})"
            reasons.append((failed & ~bad, _without_hint(reason), block.column(name)))
            bad |= failed
        null = ~bad & ~mask(values.is_valid())
        if null.any():
            what = f"label {name} is null" if is_label else f"key {name} is null"
            reasons.append((null, what + ": such a row matches no prediction", None))
            bad |= null
        if is_label and kind.name == "regressor":
            finite = mask(pc.is_finite(values))
            nonfinite = ~bad & ~finite
            if nonfinite.any():
                reasons.append((nonfinite, f"label {name}: {{!r}} is not a finite number", values))
                bad |= nonfinite
        elif is_label and kind.classes:
            known = class_index(values, kind.classes) >= 0
            unknown = ~bad & ~known
            if unknown.any():
                listed = ", ".join(kind.classes)
                reasons.append(
                    (
                        unknown,
                        f"label {name}: {{!r}} is not one of the model's classes ({listed})",
                        values,
                    )
                )
                bad |= unknown
        columns[name] = values
    for failed, reason, values in reasons:
        count = int(failed.sum())
        if count:
            first = int(np.flatnonzero(failed)[0])
            shown = values[first].as_py() if values is not None else None
            out.reject(count, path, reason.format(shown) if "{" in reason else reason)
    if not bad.any():
        return pa.table(columns)
    keep = pa.array(~bad)
    return pa.table({name: values.filter(keep) for name, values in columns.items()})


def _whole_numbers(column: pa.Array) -> pa.Array:
    """Text labels of integer classes with a float's spelling of a whole number ("1.0", what
    pandas writes for a float column holding NaN) spelled as the integer ("1")."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column
    return pc.replace_substring_regex(column, pattern=r"^([+-]?\d+)\.0*$", replacement=r"\1")


def _without_hint(reason: str) -> str:
    """The cast's reason without its scoring-run hint (--column_types is pipeline.run's)."""
    return reason.split("; set --column_types", 1)[0]


def class_index(values, classes: tuple[str, ...]) -> np.ndarray:
    """Each value's position among the classes (named as the proba_<class> columns name them,
    Python's spelling of the class), -1 for a value that is not a class."""
    typed = None
    try:
        typed = pc.cast(pa.array(classes), values.type)
        if [str(v) for v in typed.to_pylist()] != list(classes):
            typed = None  # a class Arrow spells otherwise: by Python's spelling, value by value
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if typed is not None:
        found = pc.index_in(values, value_set=typed)
        return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(str(v), -1) for v in values.to_pylist()], dtype=np.int64)
