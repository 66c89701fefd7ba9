"""The launcher's sample of an input file: its columns and first rows, as the workers' readers
parse them (the launcher decides the columns' types from it), and a CSV file's header."""

from __future__ import annotations

import pyarrow as pa

from models.errors import one_line
from transforms.sources import INT96_UNIT, FileUnreadable, open_input, open_raw
from transforms.spec import TextFormat
from transforms.textblocks import RecordBlocks
from transforms.textread import (
    decode,
    parse_csv,
    parse_jsonl,
    shown,
    split_records,
)

SAMPLE_BYTES = 1 << 20
SAMPLE_ROWS = 1000


def sample(path: str, fmt: str, text: TextFormat) -> pa.Table:
    """A file's columns and first rows, as the workers' readers parse them: Parquet with its
    declared types, CSV as text (the launcher decides the types), JSON Lines as Arrow infers
    them from whole records. An empty file has no columns.

    Raises FileUnreadable when the file cannot be read at all.
    """
    try:
        if fmt == "parquet":
            return _sample_parquet(path)
        return _sample_text(path, fmt, text, SAMPLE_BYTES, SAMPLE_ROWS)
    except FileUnreadable:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure means the file is unreadable
        raise FileUnreadable(f"cannot read {path} as {fmt}: {one_line(e)}") from e


def _sample_parquet(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    with open_raw(path) as f:
        if not f.read(1):  # zero bytes: zero rows, not an error
            return pa.table({})
        f.seek(0)
        pf = pq.ParquetFile(f, coerce_int96_timestamp_unit=INT96_UNIT)
        first = next(pf.iter_batches(batch_size=SAMPLE_ROWS), None)
        schema = pf.schema_arrow
        return pa.Table.from_batches([first] if first else [], schema=schema)


def csv_header(path: str, text: TextFormat) -> tuple[str, ...]:
    """A CSV file's header names (empty when the file holds no header), as Arrow reads them: a
    BOM and blank lines before the header are skipped, quoted names may hold delimiters."""
    import pyarrow.csv as pacsv

    with open_input(path) as stream:
        for block in RecordBlocks(stream, 0, None, quoted=True, block_bytes=64 << 10):
            for record in split_records(block.data, 1, (text.delimiter, 0)):
                raw = block.data[record.start : record.end]
                if not raw.strip():
                    continue
                try:
                    header = decode(raw, text)
                    header.decode("utf-8")
                except UnicodeDecodeError:
                    raise FileUnreadable(
                        f"the header of {path} is not valid {text.encoding} text "
                        f"({shown(raw)[:120]}); set --input_encoding"
                    ) from None
                table = pacsv.read_csv(
                    pa.py_buffer(header + b"\n"),
                    parse_options=pacsv.ParseOptions(
                        delimiter=text.delimiter, newlines_in_values=True
                    ),
                )
                return tuple(table.column_names)
    return ()


def _sample_text(path: str, fmt: str, text: TextFormat, max_bytes: int, max_rows: int) -> pa.Table:
    """The first rows of a CSV (every column as text) or JSON Lines file, parsed from whole
    records of about `max_bytes` (more when the first record is longer)."""
    if fmt == "csv":
        names = csv_header(path, text)
        if not names:
            return pa.table({})
        empty = pa.Table.from_arrays([pa.nulls(0, pa.string())] * len(names), names=list(names))
        if len(set(names)) != len(names):
            return empty  # the launcher names the repeated column
        with open_input(path) as stream:
            blocks = RecordBlocks(stream, 0, None, quoted=True, header=True, block_bytes=max_bytes)
            for block in blocks:
                types = {n: pa.string() for n in names}
                parsed = parse_csv(block.data, block.first_line, names, list(names), types, text)
                if parsed.table.num_rows:
                    return parsed.table.slice(0, max_rows)
        return empty
    with open_input(path) as stream:
        blocks = RecordBlocks(stream, 0, None, quoted=False, block_bytes=max_bytes)
        for block in blocks:
            if not block.data.strip():
                continue
            if block.data.lstrip().startswith(b"["):
                raise FileUnreadable(json_array_message(path))
            parsed = parse_jsonl(block.data, block.first_line, text, exact=None)
            if parsed.table.num_columns:
                return parsed.table.slice(0, max_rows)
    return pa.table({})


def json_array_message(path: str) -> str:
    """Why a .json file holding one JSON array is not read."""
    return (
        f"{path} holds a JSON array, not JSON Lines (one object per line); convert it, e.g. "
        f"jq -c '.[]' {path.rsplit('/', 1)[-1]} > records.jsonl"
    )
