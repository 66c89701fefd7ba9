"""The run report's values and charts: escaping, numbers as a person reads them, inline SVG.

Only the standard library (see pipeline.report).
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Iterable
from typing import Any

# Copies of transforms.errors.STAGES and transforms.profile.PSI_WARNING (tests check they agree):
# importing those modules would import Apache Beam.
STAGES = ("read", "validate", "predict")


PSI_WARNING = 0.2


MAX_FILES = 10


MAX_ERROR_GROUPS = 10


MAX_EXAMPLES = 3


MAX_RECORD_CHARS = 2000


MAX_FEATURES = 40


MAX_CLASSES = 20


NA = "n/a"


# No fetch of any kind: styles are inline, charts are inline SVG, and there is no script.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def unknown_rows(
    unknown: Any, treatment: str, keep_zero: bool = False
) -> list[tuple[str, float | None]]:
    """(feature, rows) of the manifest's unknown_categories[treatment], the most rows first."""
    found = dig(unknown, treatment)
    if not isinstance(found, dict):
        return []
    rows = [(str(k), number(v)) for k, v in found.items()]
    rows = [(k, n) for k, n in rows if keep_zero or n]
    return sorted(rows, key=lambda kv: (-(kv[1] or 0), kv[0]))


def hbar(fraction: float, kind: str = "", mark: float | None = None) -> str:
    """A horizontal bar filling `fraction` of its cell, with an optional dashed mark line."""
    width = max(0.0, min(fraction, 1.0)) * 100
    line = ""
    if mark is not None:
        x = f"{mark * 100:.2f}"
        line = f'<line class="mark" x1="{x}" x2="{x}" y1="0" y2="12"/>'
    return (
        '<svg class="hbar" viewBox="0 0 100 12" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="track" width="100" height="12"/>'
        f'<rect class="fill {kind}" width="{width:.2f}" height="12"/>{line}</svg>'
    )


def histogram(ident: str, counts: list[int], edges: list[float]) -> str:
    """Vertical bars over [edges[0], edges[-1]], with the count of each bin on hover."""
    w, h, left, bottom, top = 640, 200, 56, 26, 8
    plot_w, plot_h = w - left - 8, h - bottom - top
    lo, hi, peak = edges[0], edges[-1], max(counts) or 1

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    bars = []
    for k, c in enumerate(counts):
        x0, x1 = x(edges[k]), x(edges[k + 1])
        bh = c / peak * plot_h
        bars.append(
            f'<rect class="bin" data-count="{c}" x="{x0 + 0.5:.1f}" y="{top + plot_h - bh:.1f}" '
            f'width="{max(x1 - x0 - 1, 0.5):.1f}" height="{bh:.1f}">'
            f"<title>{e(_short(edges[k]))} to {e(_short(edges[k + 1]))}: {c:,} rows</title>"
            "</rect>"
        )
    step = max(1, len(counts) // 4)
    ticks = sorted({*range(0, len(edges), step), len(edges) - 1})
    anchor = {0: "start", len(edges) - 1: "end"}  # the outer labels stay inside the chart
    labels = "".join(
        f'<text x="{x(edges[k]):.1f}" y="{h - 8}" text-anchor="{anchor.get(k, "middle")}">'
        f"{e(_short(edges[k]))}</text>"
        for k in ticks
    )
    return (
        f'<svg class="hist" id="{ident}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="histogram of {len(counts)} bins, {sum(counts):,} rows">'
        f'<line class="axis" x1="{left}" x2="{w - 8}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
        f'<line class="grid" x1="{left}" x2="{w - 8}" y1="{top}" y2="{top}"/>'
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak:,}</text>'
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>'
        f"{''.join(bars)}{labels}</svg>"
    )


def e(value: Any) -> str:
    """HTML-escaped text of a value, quotes included (safe in text and in attributes)."""
    return html.escape(str(value), quote=True)


def as_text(value: Any) -> str:
    """Escaped text of a value, "n/a" when it is missing."""
    return NA if value is None or value == "" else e(value)


def clip(value: Any, limit: int = 160) -> str:
    text = NA if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any) -> float | None:
    """A finite int or float (not a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # an int too large for a float: shown as text instead
        return None


def as_raw(value: float | None) -> str:
    """A number as a data-* attribute holds it: repr, or empty when missing."""
    return "" if value is None else repr(value)


def dig(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def input_list(m: dict) -> list[dict]:
    """The manifest's per-file entries, each with its path as text."""
    inputs = m.get("inputs")
    if not isinstance(inputs, list):
        return []
    return [{**i, "path": str(i.get("path"))} for i in inputs if isinstance(i, dict)]


def unreadable(m: dict) -> set[str]:
    """The input files that could not be read: listed in files_failed or marked failed."""
    listed = m.get("files_failed")
    paths = {str(p) for p in listed} if isinstance(listed, list) else set()
    return paths | {i["path"] for i in input_list(m) if i.get("failed") is True}


def as_counts(value: Any) -> list[int] | None:
    """A histogram's counts when they are all non-negative numbers and some are positive."""
    if not isinstance(value, list) or not value:
        return None
    if any(number(c) is None or c < 0 for c in value) or not any(value):
        return None
    return [int(c) for c in value]


def error_rate(m: dict) -> float | None:
    rate = number(m.get("error_rate"))
    if rate is None:
        read, failed = (
            number(dig(m, "counts", "rows_read")),
            number(dig(m, "counts", "rows_failed")),
        )
        rate = failed / read if read and failed is not None else None
    return rate


def duration(m: dict) -> float | None:
    """The run's seconds: the manifest's own, or finished_at minus started_at."""
    seconds = number(m.get("duration_s"))
    if seconds is not None:
        return seconds
    start, end = _parse_time(m.get("started_at")), _parse_time(m.get("finished_at"))
    if start and end:
        try:
            return (end - start).total_seconds()
        except TypeError:  # one naive, one aware
            return None
    return None


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def when(value: Any) -> str:
    """A timestamp as UTC to the second ("2026-11-26 18:16:40 UTC"), or as given."""
    t = _parse_time(value)
    if t is None:
        return NA if value is None else str(value)
    if t.tzinfo is None:
        return t.strftime("%Y-%m-%d %H:%M:%S")
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def as_int(value: Any, raw: bool = False) -> str:
    """A count with thousands separators, escaped ("n/a" when not a number)."""
    n = number(value)
    if n is None:
        return NA if value is None else (str(value) if raw else e(value))
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


def pct(value: float | None) -> str:
    """A fraction as a percentage, with the decimals small rates need ("0.50%", "0.0012%")."""
    if value is None:
        return NA
    p = value * 100
    if p == 0:
        return "0%"
    if abs(p) >= 10:
        return f"{p:,.1f}%"
    if abs(p) >= 0.01:
        return f"{p:.2f}%"
    return f"{p:.4f}%" if abs(p) >= 0.0001 else "<0.0001%"


def as_seconds(value: float | None) -> str:
    if value is None:
        return NA
    if value < 60:
        return f"{value:.1f} s"
    s = round(value)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def as_rate(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _short(value: float) -> str:
    """An axis label: 3 significant digits, thousands separated when large."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def count_of(files: Any) -> str | None:
    return f"{len(files):,}" if isinstance(files, list) else None


def library_mismatches(libraries: Any) -> Iterable[tuple[str, str, str]]:
    if not isinstance(libraries, dict):
        return []
    out = []
    for name, v in sorted(libraries.items()):
        if isinstance(v, dict) and v.get("saved") and v.get("running"):
            if v["saved"] != v["running"]:
                out.append((str(name), str(v["saved"]), str(v["running"])))
    return out


def status_class(status: str | None) -> str:
    return {"succeeded": "ok", "failed": "bad"}.get(status or "", "unknown")
