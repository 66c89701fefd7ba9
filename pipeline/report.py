"""The run report: one self-contained HTML page (DIR/report.html) for whoever is on call.

`render_report` turns a run's manifest, its profile and its grouped errors into a page that needs
nothing but a browser: inline CSS, inline SVG charts, no script, and a Content-Security-Policy that
forbids every fetch. Every value from the run is HTML-escaped, since file names and rejected
records are whatever the input held.

Only the standard library is imported: the launcher renders this after the run, and a report
must never be what fails on a broken environment. Every manifest key may be missing (older
manifests, runs that could not complete); a missing value shows as "n/a".

Stable hooks for tests and scrapers (ids unless said otherwise):
    status (data-status), run-id, run-date, started-at, finished-at, duration and throughput
    (data-value), rows-read, rows-predicted, rows-failed, failed-<stage>, error-rate and
    max-error-rate (data-value), model-uri, model-version, model-sha256;
    tr[data-path] in #files with td[data-col], files-more (data-count);
    .error-group[data-stage][data-count] with .example pre.record, errors-more (data-count);
    tr[data-feature][data-psi] in #drift; tr[data-library] in #model;
    #unknown-categories (data-rule) with tr[data-column][data-treatment][data-rows];
    profile-rows, tr[data-class][data-count] in #class-shares; rect[data-count] in
    #proba-histogram and #prediction-histogram;
    #reasons (data-k, data-method) with tr[data-feature][data-rows][data-share] (--explain);
    #history with tr[data-run-date] (tonight: .tonight, data-tonight="true"; a model version
    change: data-model-changed="true") and td[data-col] (far outside the previous nights:
    data-outlier="true"), #checks with li[data-check][data-state] (failed, skipped, passed);
    #where with output-predictions, output-errors, output-manifest and rerun-command.
"""

from __future__ import annotations

import datetime
import functools
import html
import importlib.resources
import json
import math
import string
from collections.abc import Iterable
from typing import Any

from pipeline.history import night_brief, outliers

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


def render_report(manifest: dict, profile: dict | None, error_groups: list[dict]) -> str:
    """Renders a run's report as one self-contained HTML page.

    Args:
        manifest: the run's manifest.json (any key may be missing).
        profile: the run's prediction profile ({"rows", "class_counts", "proba_histogram",
            "prediction_histogram"}), or None when the run has none.
        error_groups: the run's rejected records grouped by reason, most frequent first:
            [{"stage", "reason", "count", "examples": [error records]}].

    Returns:
        The page's HTML text.
    """
    m = manifest if isinstance(manifest, dict) else {}
    status = m.get("status") if isinstance(m.get("status"), str) else None
    body = "\n".join(
        [
            _banner(m, status, error_groups),
            "<main>",
            _numbers(m),
            _history(m),
            _errors(error_groups or []),
            _unknown_categories(m.get("unknown_categories")),
            _files(m),
            _drift(m.get("drift")),
            _predictions(profile),
            _reasons(m.get("explain")),
            _model(m.get("model")),
            _where(m),
            _details(m),
            "</main>",
            f"<footer>Run report of {_text(m.get('producer'))} · self-contained: this page loads"
            " nothing from the network</footer>",
        ]
    )
    title = f"{(status or 'unknown').upper()} · scoring run {m.get('run_id') or NA}"
    page = _asset("page.html").substitute(
        csp=CSP,
        title=_e(title),
        css=_asset("report.css").template,
        status_class=_status_class(status),
        body=body,
    )
    # A record may hold a lone surrogate (JSON allows "\ud800"): make the page encodable.
    return page.encode("utf-8", "replace").decode("utf-8")


@functools.cache
def _asset(name: str) -> string.Template:
    """A file of the page's skeleton and styles (pipeline/report_assets/, package data)."""
    text = importlib.resources.files("pipeline").joinpath("report_assets", name).read_text()
    return string.Template(text)


# --- the sections ------------------------------------------------------------------------------


def _banner(m: dict, status: str | None, error_groups: list[dict]) -> str:
    """The status, big and coloured, what the run was, and what needs attention."""
    started, finished = _when(m.get("started_at")), _when(m.get("finished_at"))
    return (
        '<header class="banner">'
        f'<p class="status" id="status" data-status="{_e(status or "unknown")}">'
        f"{_e((status or NA).upper())}</p>"
        '<div class="what">'
        f'<h1>Scoring run <span id="run-id" class="mono">{_text(m.get("run_id"))}</span></h1>'
        f'<p>run date <strong id="run-date">{_text(m.get("run_date"))}</strong>'
        f' · started <span id="started-at">{_e(started)}</span>'
        f' · finished <span id="finished-at">{_e(finished)}</span></p>'
        f'<p>input <span class="mono">{_text(m.get("input_pattern"))}</span>'
        f' · model version <span class="mono">{_text(_dig(m, "model", "version"))}</span></p>'
        "</div>"
        f'<section class="attention" aria-label="What needs attention">'
        f"{_attention(m, status, error_groups)}</section>"
        "</header>"
    )


def _attention(m: dict, status: str | None, error_groups: list[dict]) -> str:
    """Why the run failed, and what else is worth a look, each linked to its section."""
    items = []
    if m.get("error"):
        items.append(("bad", "#details", f"The run could not complete: {m['error']}"))
    for check in _list(m.get("failed_checks")):
        message = _clip(check.get("message"))
        items.append(("bad", "#checks", f"Night check {check.get('check', NA)} failed: {message}"))
    for check in _list(_dig(m, "checks", "skipped")):
        items.append(
            ("info", "#checks", f"Night check {check.get('check', NA)} {check.get('message')}")
        )
    for text in _far(m).values():
        items.append(("warn", "#history", text[0].upper() + text[1:]))
    repeated = m.get("repeated_input")
    refused = any(c.get("check") == "refuse_repeated_input" for c in _list(m.get("failed_checks")))
    if isinstance(repeated, dict) and not refused:
        items.append(
            (
                "warn",
                "#history",
                f"Tonight's input is the night of {repeated.get('run_date')}'s again (the same "
                "content, file for file)",
            )
        )
    n = len(_list(_dig(m, "history", "ignored")))
    if n:
        items.append(
            ("warn", "#history-ignored", f"{n:,} folder{'s' * (n != 1)} left out of the history")
        )
    n = len(_unreadable(m))
    if n:
        items.append(("bad", "#files", f"{n:,} input file{'s' * (n != 1)} could not be read"))
    rate, limit = _error_rate(m), _number(m.get("max_error_rate"))
    failed = _number(_dig(m, "counts", "rows_failed"))
    if rate is not None and limit is not None and rate > limit:
        items.append(
            ("bad", "#errors", f"Error rate {_pct(rate)} is over the max allowed {_pct(limit)}")
        )
    elif failed:
        items.append(("warn", "#errors", f"{_int(failed)} rows rejected, within the max allowed"))
    if error_groups and isinstance(error_groups[0], dict):
        top = error_groups[0]
        items.append(
            ("info", "#errors", f"Top error ({top.get('stage', NA)}): {_clip(top.get('reason'))}")
        )
    drift = m.get("drift") if isinstance(m.get("drift"), dict) else {}
    drifted = sorted(
        ((k, v) for k, v in drift.items() if _number(v) is not None and v > PSI_WARNING),
        key=lambda kv: -kv[1],
    )
    if drifted:
        names = ", ".join(f"{k} ({v:.2f})" for k, v in drifted[:5])
        more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
        items.append(("warn", "#drift", f"Drift (PSI > {PSI_WARNING}): {names}{more}"))
    scored = _unknown_rows(m.get("unknown_categories"), "scored")
    if scored:
        names = ", ".join(f"{k} ({_int(n)})" for k, n in scored[:5])
        more = f" and {len(scored) - 5} more" if len(scored) > 5 else ""
        items.append(
            (
                "warn",
                "#unknown-categories",
                f"Rows scored with an unknown category: {names}{more}",
            )
        )
    for name, saved, running in _library_mismatches(_dig(m, "model", "library_versions")):
        items.append(("warn", "#model", f"{name} saved with {saved}, running {running}"))
    if not items:
        ok = status == "succeeded"
        text = "Nothing needs attention" if ok else "The manifest gives no reason"
        items.append(("ok" if ok else "info", "#numbers", text))
    return (
        "<ul>"
        + "".join(
            f'<li class="{kind}"><a href="{href}">{_e(text)}</a></li>' for kind, href, text in items
        )
        + "</ul>"
    )


def _numbers(m: dict) -> str:
    """The key numbers: rows read, predicted and failed, error rate, duration, throughput."""
    counts = _dig(m, "counts") if isinstance(_dig(m, "counts"), dict) else {}
    by_stage = counts.get("rows_failed_by_stage")
    by_stage = by_stage if isinstance(by_stage, dict) else {}
    stages = [*STAGES, *(s for s in by_stage if s not in STAGES)]
    read, predicted = _number(counts.get("rows_read")), _number(counts.get("rows_predicted"))
    failed = _number(counts.get("rows_failed"))
    rate, limit = _error_rate(m), _number(m.get("max_error_rate"))
    over = rate is not None and limit is not None and rate > limit
    duration = _duration(m)
    rows_per_s = _number(m.get("rows_per_s"))
    if rows_per_s is None and duration and read is not None:
        rows_per_s = read / duration
    inputs = _inputs(m)
    unreadable = len(_unreadable(m))
    files = f"in {len(inputs):,} file{'s' * (len(inputs) != 1)}" if inputs else "files: n/a"
    if unreadable:
        files += f", <strong>{unreadable:,} unreadable</strong>"
    share = f"{_pct(predicted / read)} of rows read" if read and predicted is not None else NA
    stage_list = "".join(
        f'<li><span>{_e(s)}</span> <strong class="num" id="failed-{_e(s)}">'
        f"{_int(by_stage.get(s))}</strong></li>"
        for s in stages
    )
    verdict = " — <strong>over the limit</strong>" if over else ""
    return (
        '<section id="numbers" aria-label="Key numbers"><div class="cards">'
        f"{_card('Rows read', 'rows-read', _int(read), files)}"
        f"{_card('Predicted', 'rows-predicted', _int(predicted), share)}"
        f'<div class="card{" bad" if failed else ""}"><h3>Failed</h3>'
        f'<p class="big num" id="rows-failed">{_int(failed)}</p>'
        f'<ul class="stages" aria-label="failed by stage">{stage_list}</ul></div>'
        f'<div class="card{" bad" if over else ""}"><h3>Error rate</h3>'
        f'<p class="big num" id="error-rate" data-value="{_e(_raw(rate))}">{_pct(rate)}</p>'
        f'<p>max allowed <span class="num" id="max-error-rate" data-value="{_e(_raw(limit))}">'
        f"{_pct(limit)}</span>{verdict}</p></div>"
        f'<div class="card"><h3>Duration</h3>'
        f'<p class="big num" id="duration" data-value="{_e(_raw(duration))}">'
        f"{_seconds(duration)}</p>"
        f'<p><span class="num" id="throughput" data-value="{_e(_raw(rows_per_s))}">'
        f"{_rate(rows_per_s)}</span> rows/s</p></div>"
        "</div></section>"
    )


def _list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _previous(m: dict) -> list[dict]:
    return _list(_dig(m, "history", "nights"))


def _far(m: dict) -> dict[str, str]:
    """Tonight's numbers far outside the previous nights' range (pipeline.history.outliers)."""
    return outliers(_previous(m), night_brief(m))


# The history's columns: (data-col, header) of the numbers compared night over night.
_HISTORY_COLS = (
    ("rows_read", "Rows read"),
    ("error_rate", "Error rate"),
    ("top_psi", "Top drift"),
    ("prediction", "Prediction"),
    ("duration_s", "Duration"),
)


def _history(m: dict) -> str:
    """The previous nights of the same job and tonight, one row each, with the night checks;
    tonight's numbers far outside the previous nights' range are highlighted."""
    previous = _previous(m)
    source = _dig(m, "history", "source")
    far = _far(m)
    rows = []
    version = None
    nights = [*previous, {**night_brief(m), "tonight": True}]
    for i, night in enumerate(nights):
        tonight = night.get("tonight") is True
        changed = i > 0 and night.get("model_version") != version
        version = night.get("model_version")
        cells = [
            f'<th scope="row" class="mono">{_text(night.get("run_date"))}'
            + ('<br><span class="pill">tonight</span>' if tonight else "")
            + "</th>",
            f'<td><span class="pill {_status_pill(night.get("status"))}">'
            f"{_text(night.get('status'))}</span></td>",
        ]
        for col, _ in _HISTORY_COLS:
            text, raw = _history_cell(night, col)
            hot = tonight and col in far
            flag = ' data-outlier="true"'
            title = f' title="{_e(far[col])}"' if hot else ""
            cells.append(
                f'<td class="num{" outlier" if hot else ""}" data-col="{col}" '
                f'data-value="{_e(_raw(raw))}"{flag if hot else ""}{title}>{text}</td>'
            )
        mark = ' <span class="pill warn">changed</span>' if changed else ""
        cells.append(f'<td class="mono" data-col="model_version">{_text(version)}{mark}</td>')
        cells.append(f'<td data-col="quality">{_quality(night.get("quality"))}</td>')
        attrs = f' data-run-date="{_e(night.get("run_date"))}"'
        attrs += ' class="tonight" data-tonight="true"' if tonight else ""
        attrs += ' data-model-changed="true"' if changed else ""
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    head = "".join(f'<th scope="col" class="num">{h}</th>' for _, h in _HISTORY_COLS)
    if previous:
        note = (
            f"The {len(previous)} previous night{'s' * (len(previous) != 1)} of this job "
            f"(from {_e(source)}) and tonight. A number of tonight's far outside the previous "
            "nights' range is highlighted; a model version change is marked."
        )
    else:
        note = f"No previous night of this job was found ({_text(source)})."
    return (
        f'<section id="history"><h2>History</h2><p class="quiet">{note}</p>{_ignored(m)}'
        f"{_checks(m)}"
        '<div class="scroll"><table class="data"><thead><tr><th scope="col">Night</th>'
        f'<th scope="col">Status</th>{head}<th scope="col">Model version</th>'
        f'<th scope="col">Quality (labels)</th></tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></div></section>"
    )


def _ignored(m: dict) -> str:
    """The sibling folders whose manifest the history did not count, and why."""
    items = [
        f'<li data-ignored="{_e(i.get("run_date"))}"><span class="pill warn">ignored</span> '
        f'<span class="mono">{_text(i.get("folder"))}</span>: {_e(_clip(i.get("reason"), 400))}'
        "</li>"
        for i in _list(_dig(m, "history", "ignored"))
    ]
    if not items:
        return ""
    return f'<ul class="checks" id="history-ignored">{"".join(items)}</ul>'


def _history_cell(night: dict, col: str) -> tuple[str, float | None]:
    """A history cell's text and its number."""
    if col == "rows_read":
        n = _number(night.get("rows_read"))
        return _int(n), n
    if col == "error_rate":
        rate = _number(night.get("error_rate"))
        return _pct(rate), rate
    if col == "duration_s":
        seconds = _number(night.get("duration_s"))
        return _seconds(seconds), seconds
    if col == "top_psi":
        top = night.get("top_drift") if isinstance(night.get("top_drift"), dict) else {}
        psi = _number(top.get("psi"))
        if psi is None:
            return NA, None
        return f'<span class="mono">{_e(top.get("feature"))}</span> {psi:.3f}', psi
    summary = night.get("prediction") if isinstance(night.get("prediction"), dict) else {}
    value = _number(summary.get("value"))
    if value is None:
        return NA, None
    if summary.get("kind") == "positive_share":
        return f'{_pct(value)} <span class="quiet">= {_e(summary.get("class"))}</span>', value
    return f'{value:.4g} <span class="quiet">mean</span>', value


def _quality(quality: Any) -> str:
    metrics = _dig(quality, "metrics")
    if not isinstance(metrics, dict) or not metrics:
        return f'<span class="quiet">{NA}</span>'
    items = "".join(
        f'<span class="metric" data-metric="{_e(k)}" data-value="{_e(_raw(_number(v)))}">'
        f"{_e(k)} {_number(v):.3f}</span> "
        for k, v in list(metrics.items())[:6]
        if _number(v) is not None
    )
    labelled = _number(_dig(quality, "rows_labelled"))
    return items + (f'<span class="quiet">({_int(labelled)} labelled)</span>' if labelled else "")


def _status_pill(status: Any) -> str:
    return (
        {"succeeded": "ok", "failed": "failed"}.get(status, "") if isinstance(status, str) else ""
    )


def _checks(m: dict) -> str:
    """The night checks: each limit set, and whether tonight passed, failed or skipped it."""
    limits = m.get("checks") if isinstance(m.get("checks"), dict) else {}
    failed = {str(c.get("check")): c for c in _list(m.get("failed_checks"))}
    skipped = {str(c.get("check")): c for c in _list(limits.get("skipped"))}
    items = []
    for name in ("min_rows", "max_drift", "max_rows_change", "refuse_repeated_input"):
        limit = limits.get(name)
        if limit is None:
            continue
        if name in failed:
            state, text = "failed", failed[name].get("message")
        elif name in skipped:
            state, text = "skipped", skipped[name].get("message")
        else:
            state, text = "passed", "passed"
        kind = {"failed": "failed", "skipped": "warn", "passed": "ok"}[state]
        items.append(
            f'<li data-check="{name}" data-state="{state}"><span class="pill {kind}">{state}</span>'
            f' <span class="mono">--{name} {_e(limit)}</span>: {_e(_clip(text, 400))}</li>'
        )
    if not items:
        return (
            '<p class="quiet" id="checks">No night check is set (--min_rows, --max_drift, '
            "--max_rows_change).</p>"
        )
    return f'<ul id="checks" class="checks">{"".join(items)}</ul>'


def _where(m: dict) -> str:
    """Where tonight's output went, and the command that reruns this night."""
    directory = m.get("output")
    if not isinstance(directory, str):
        return ""
    outputs = m.get("outputs") if isinstance(m.get("outputs"), dict) else {}
    rows = [
        (
            "output-predictions",
            "Predictions",
            f"{directory}/predictions/",
            outputs.get("predictions"),
        ),
        ("output-errors", "Errors", f"{directory}/errors/", outputs.get("errors")),
        ("output-manifest", "Manifest", f"{directory}/manifest.json", None),
    ]
    facts = "".join(
        f'<dt>{label}</dt><dd><span class="mono" id="{ident}">{_e(path)}</span>'
        + (f" ({_count_of(files)})" if isinstance(files, list) else "")
        + "</dd>"
        for ident, label, path, files in rows
    )
    rerun = m.get("rerun_command")
    command = (
        f'<h3>Rerun this night</h3><pre class="record" id="rerun-command">{_e(rerun)}</pre>'
        if isinstance(rerun, str)
        else ""
    )
    return (
        f'<section id="where"><h2>Where the output went</h2><dl class="facts">{facts}</dl>'
        f"{command}</section>"
    )


def _card(title: str, ident: str, value: str, note: str) -> str:
    """A key number; `note` is HTML."""
    return (
        f'<div class="card"><h3>{title}</h3><p class="big num" id="{ident}">{value}</p>'
        f"<p>{note}</p></div>"
    )


def _errors(groups: list) -> str:
    """The most frequent error reasons, each with a few of its records as the input held them."""
    groups = [g for g in groups if isinstance(g, dict)]
    if not groups:
        return (
            '<section id="errors"><h2>Errors</h2>'
            '<p class="quiet">No rejected records.</p></section>'
        )
    out = ['<section id="errors"><h2>Top error reasons</h2>']
    for g in groups[:MAX_ERROR_GROUPS]:
        count = _number(g.get("count"))
        examples = g.get("examples") if isinstance(g.get("examples"), list) else []
        stage = g.get("stage") or NA
        out.append(
            f'<article class="error-group" data-stage="{_e(stage)}" data-count="{_e(_raw(count))}">'
            f'<header><span class="stage stage-{_e(stage)}">{_e(stage)}</span>'
            f'<span class="count"><strong class="num">{_int(count)}</strong> '
            f"record{'' if count == 1 else 's'}</span>"
            "</header>"
            f'<p class="reason">{_text(g.get("reason"))}</p>'
            + "".join(_example(x) for x in examples[:MAX_EXAMPLES] if isinstance(x, dict))
            + "</article>"
        )
    rest = groups[MAX_ERROR_GROUPS:]
    if rest:
        n = sum(_number(g.get("count")) or 0 for g in rest)
        out.append(
            f'<p class="more" id="errors-more" data-count="{len(rest)}">… and {len(rest):,} more'
            f" reasons ({_int(n)} records): see errors/*.jsonl</p>"
        )
    out.append("</section>")
    return "".join(out)


def _unknown_categories(unknown: Any) -> str:
    """Per categorical feature, the rows that held a category the model was not trained on, and
    what became of them (rejected at validate, or scored as the model takes one)."""
    head = '<section id="unknown-categories"'
    if not isinstance(unknown, dict):
        return head + '><h2>Unknown categories</h2><p class="quiet">n/a</p></section>'
    rule = unknown.get("rule")
    head += f' data-rule="{_e(rule if isinstance(rule, str) else "")}"><h2>Unknown categories</h2>'
    rows = []
    for treatment, label in (("rejected", "rejected at validate"), ("scored", "scored")):
        for name, n in _unknown_rows(unknown, treatment, keep_zero=True):
            cls = ("warn" if treatment == "scored" else "failed") if n else ""
            rows.append(
                f'<tr class="{cls}" data-column="{_e(name)}" data-treatment="{treatment}" '
                f'data-rows="{_e(_raw(n))}"><th scope="row" class="mono">{_e(name)}</th>'
                f'<td class="num">{_int(n)}</td><td>{label}</td></tr>'
            )
    if not rows:
        return head + '<p class="quiet">The model has no categorical features.</p></section>'
    return (
        head + '<p class="quiet">Rows holding a category the model was not trained on, per '
        "feature. Such a category is scored only where the model declares how it takes one (a "
        "scikit-learn encoder that ignores it), or where the run says "
        "<code>--unknown_categories score</code> and the model's library has a treatment for one "
        f"(XGBoost, LightGBM: a missing value); this run: <code>{_text(rule)}</code>.</p>"
        '<table class="data"><thead><tr><th scope="col">Feature</th>'
        '<th scope="col" class="num">Rows</th><th scope="col">Those rows were</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _unknown_rows(
    unknown: Any, treatment: str, keep_zero: bool = False
) -> list[tuple[str, float | None]]:
    """(feature, rows) of the manifest's unknown_categories[treatment], the most rows first."""
    found = _dig(unknown, treatment)
    if not isinstance(found, dict):
        return []
    rows = [(str(k), _number(v)) for k, v in found.items()]
    rows = [(k, n) for k, n in rows if keep_zero or n]
    return sorted(rows, key=lambda kv: (-(kv[1] or 0), kv[0]))


def _example(record: dict) -> str:
    """One rejected record: where it came from, then its raw text."""
    where = [f'<span class="mono">{_text(record.get("source"))}</span>']
    for key, label in (("line", "line"), ("row_index", "row_index"), ("rows", "rows")):
        if _number(record.get(key)) is not None:
            where.append(f"{label} {_int(record[key])}")
    raw = record.get("record")
    if raw is None:
        text = "(no record: the whole file was rejected)"
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    note = ""
    if len(text) > MAX_RECORD_CHARS:
        note = f" · showing {MAX_RECORD_CHARS:,} of {len(text):,} characters"
        text = text[:MAX_RECORD_CHARS]
    if record.get("truncated"):
        note += " · cut to 64 KiB in errors/"
    return (
        f'<figure class="example"><figcaption>{" · ".join(where)}{_e(note)}</figcaption>'
        f'<pre class="record">{_e(text)}</pre></figure>'
    )


def _files(m: dict) -> str:
    """Counts per input file, the worst first; unreadable files highlighted."""
    inputs = _inputs(m)
    unreadable = _unreadable(m)
    # Older manifests may list a failed file that has no entry of its own.
    inputs += [{"path": p, "failed": True} for p in unreadable - {i["path"] for i in inputs}]
    if not inputs:
        return '<section id="files"><h2>Input files</h2><p class="quiet">n/a</p></section>'

    def failed(i: dict) -> bool:
        return i["path"] in unreadable

    def badness(i: dict) -> tuple:
        bad, read = _number(i.get("rows_failed")) or 0, _number(i.get("rows_read")) or 0
        return (not failed(i), -bad, -(bad / read if read else 0), str(i.get("path")))

    ranked = sorted(inputs, key=badness)
    shown, rest = ranked[:MAX_FILES], ranked[MAX_FILES:]
    rows = []
    for i in shown:
        bad, read = _number(i.get("rows_failed")), _number(i.get("rows_read"))
        cls = "failed" if failed(i) else ("warn" if bad else "")
        state = "unreadable" if failed(i) else ("rows rejected" if bad else "ok")
        rows.append(
            f'<tr class="{cls}" data-path="{_e(i.get("path"))}" '
            f'data-failed="{str(failed(i)).lower()}">'
            f'<td class="mono path">{_text(i.get("path"))}</td>'
            f'<td class="num" data-col="rows_read">{_int(read)}</td>'
            f'<td class="num" data-col="rows_predicted">{_int(i.get("rows_predicted"))}</td>'
            f'<td class="num" data-col="rows_failed">{_int(bad)}</td>'
            f'<td class="num">{_pct(bad / read) if bad is not None and read else NA}</td>'
            f'<td><span class="pill {cls or "ok"}">{state}</span></td></tr>'
        )
    more = ""
    if rest:
        read = sum(_number(i.get("rows_read")) or 0 for i in rest)
        bad = sum(_number(i.get("rows_failed")) or 0 for i in rest)
        more = (
            f'<p class="more" id="files-more" data-count="{len(rest)}">… and {len(rest):,} more '
            f"files ({_int(read)} rows read, {_int(bad)} failed): see manifest.json</p>"
        )
    caption = f"{len(inputs):,} file{'s' * (len(inputs) != 1)}"
    if rest:
        caption = (
            f"the {len(shown):,} worst of {len(inputs):,} files: unreadable first, then the most"
            " rejected rows"
        )
    return (
        '<section id="files"><h2>Input files</h2>'
        f'<div class="scroll"><table class="data"><caption>{caption}</caption>'
        '<thead><tr><th scope="col">File</th><th scope="col" class="num">Read</th>'
        '<th scope="col" class="num">Predicted</th><th scope="col" class="num">Failed</th>'
        '<th scope="col" class="num">Failed %</th><th scope="col">State</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{more}</section>"
    )


def _drift(drift: Any) -> str:
    """PSI per feature as horizontal bars, the largest first; above PSI_WARNING highlighted."""
    head = '<section id="drift"><h2>Drift</h2>'
    if not isinstance(drift, dict) or not drift:
        return head + '<p class="quiet">n/a: the model has no drift baseline.</p></section>'
    values = sorted(drift.items(), key=lambda kv: -(_number(kv[1]) or 0))
    scale = max([PSI_WARNING * 1.5, *(_number(v) or 0 for _, v in values)])
    mark = PSI_WARNING / scale
    rows = []
    for name, value in values[:MAX_FEATURES]:
        psi = _number(value)
        high = psi is not None and psi > PSI_WARNING
        rows.append(
            f'<tr class="{"drifted" if high else ""}" data-feature="{_e(name)}" '
            f'data-psi="{_e(_raw(psi))}"><th scope="row" class="mono">{_e(name)}</th>'
            f'<td class="num">{NA if psi is None else f"{psi:.3f}"}</td>'
            f'<td class="bar">{_hbar((psi or 0) / scale, "bad" if high else "", mark)}</td></tr>'
        )
    more = ""
    if len(values) > MAX_FEATURES:
        more = f'<p class="more">… and {len(values) - MAX_FEATURES:,} more features, all lower</p>'
    return (
        head + '<p class="quiet">Population stability index of each feature against the model\'s'
        f" training data. Above {PSI_WARNING} (the dashed line) the feature has moved a lot: the"
        " model is scoring data unlike what it learned from.</p>"
        '<table class="data bars"><thead><tr><th scope="col">Feature</th>'
        '<th scope="col" class="num">PSI</th><th scope="col">'
        f"dashed line: {PSI_WARNING}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{more}</section>"
    )


def _reasons(explain: Any) -> str:
    """--explain: the features most often the rows' top reason tonight, with their share."""
    if not isinstance(explain, dict):
        return ""  # a run without --explain has no such section
    top = explain.get("top_reasons")
    head = (
        f'<section id="reasons" data-k="{_e(explain.get("k"))}" '
        f'data-method="{_e(explain.get("method"))}"><h2>Reason codes</h2>'
        f'<p class="quiet">The feature each row\'s score moved most for (reason_1), by how many '
        f"rows; contributions in {_text(explain.get('units'))} ({_text(explain.get('method'))}, "
        f"expected value {_text(explain.get('expected_value'))}).</p>"
    )
    if not isinstance(top, list) or not top:
        return head + '<p class="quiet">n/a: no row was scored.</p></section>'
    rows = []
    for item in top[:MAX_FEATURES]:
        if not isinstance(item, dict):
            continue
        name = item.get("feature")
        share = _number(item.get("share"))
        label = _e(name) if name is not None else '<span class="quiet">(no feature)</span>'
        rows.append(
            f'<tr data-feature="{_e(name if name is not None else "")}" '
            f'data-rows="{_e(_raw(_number(item.get("rows"))))}" data-share="{_e(_raw(share))}">'
            f'<th scope="row" class="mono">{label}</th>'
            f'<td class="num">{_int(item.get("rows"))}</td><td class="num">{_pct(share)}</td>'
            f'<td class="bar">{_hbar(share or 0, "accent")}</td></tr>'
        )
    more = ""
    if len(top) > MAX_FEATURES:
        more = f'<p class="more">… and {len(top) - MAX_FEATURES:,} more features</p>'
    return (
        head + '<table class="data bars"><thead><tr><th scope="col">Top reason</th>'
        '<th scope="col" class="num">Rows</th><th scope="col" class="num">Share</th>'
        '<th scope="col"><span class="sr">bar</span></th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{more}</section>"
    )


def _predictions(profile: Any) -> str:
    """Class shares, the positive-class probability histogram, or the regression histogram."""
    head = '<section id="predictions"><h2>Predictions</h2>'
    if not isinstance(profile, dict):
        return head + '<p class="quiet">n/a: no profile for this run.</p></section>'
    parts = [
        f'<p class="quiet">profile of <span class="num" id="profile-rows">'
        f"{_int(profile.get('rows'))}</span> predicted rows</p>"
    ]
    classes = profile.get("class_counts")
    if isinstance(classes, dict) and classes:
        parts.append(_class_shares(classes))
    proba = profile.get("proba_histogram")
    if isinstance(proba, dict) and _counts(proba.get("counts")):
        counts = _counts(proba["counts"])
        edges = [k / len(counts) for k in range(len(counts) + 1)]
        parts.append(
            f"<h3>Probability {_text(proba.get('column'))}</h3>"
            + _histogram("proba-histogram", counts, edges)
        )
    hist = profile.get("prediction_histogram")
    if isinstance(hist, dict) and _counts(hist.get("counts")):
        counts, edges = _counts(hist["counts"]), hist.get("edges")
        ok = isinstance(edges, list) and len(edges) == len(counts) + 1
        if ok and all(_number(x) is not None for x in edges) and edges[-1] > edges[0]:
            parts.append(
                "<h3>Predicted values</h3>" + _histogram("prediction-histogram", counts, edges)
            )
    if len(parts) == 1:
        parts.append('<p class="quiet">n/a: the profile has no distribution.</p>')
    return head + "".join(parts) + "</section>"


def _class_shares(classes: dict) -> str:
    ranked = sorted(classes.items(), key=lambda kv: -(_number(kv[1]) or 0))
    total = sum(_number(v) or 0 for v in classes.values())
    rows = []
    for label, count in ranked[:MAX_CLASSES]:
        share = (_number(count) or 0) / total if total else 0
        rows.append(
            f'<tr data-class="{_e(label)}" data-count="{_e(_raw(_number(count)))}">'
            f'<th scope="row" class="mono">{_e(label)}</th><td class="num">{_int(count)}</td>'
            f'<td class="num">{_pct(share)}</td><td class="bar">{_hbar(share, "accent")}</td></tr>'
        )
    more = ""
    if len(ranked) > MAX_CLASSES:
        more = f'<p class="more">… and {len(ranked) - MAX_CLASSES:,} more classes</p>'
    return (
        '<h3>Predicted classes</h3><table class="data bars" id="class-shares"><thead><tr>'
        '<th scope="col">Class</th><th scope="col" class="num">Rows</th>'
        '<th scope="col" class="num">Share</th><th scope="col"><span class="sr">bar</span></th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )


def _model(model: Any) -> str:
    """What scored the run: URI, version, digest and the library versions it was saved with."""
    model = model if isinstance(model, dict) else {}
    rows = [
        ("URI", "model-uri", model.get("uri")),
        ("Version", "model-version", model.get("version")),
        ("SHA-256", "model-sha256", model.get("sha256")),
        ("Model's MLflow run", "model-run-id", model.get("run_id")),
    ]
    facts = "".join(
        f'<dt>{label}</dt><dd class="mono" id="{ident}">{_text(value)}</dd>'
        for label, ident, value in rows
    )
    libraries = model.get("library_versions")
    if isinstance(libraries, dict) and libraries:
        lines = []
        for name, v in sorted(libraries.items()):
            v = v if isinstance(v, dict) else {}
            saved, running = v.get("saved"), v.get("running")
            differ = bool(saved and running and saved != running)
            lines.append(
                f'<tr class="{"warn" if differ else ""}" data-library="{_e(name)}">'
                f'<th scope="row">{_e(name)}</th><td class="mono">{_text(saved)}</td>'
                f'<td class="mono">{_text(running)}</td>'
                f'<td><span class="pill {"warn" if differ else "ok"}">'
                f"{'differs' if differ else ('same' if saved and running else NA)}</span></td></tr>"
            )
        libs = (
            '<table class="data"><caption>libraries</caption><thead><tr><th scope="col">Library'
            '</th><th scope="col">Saved with</th><th scope="col">Running</th><th scope="col">'
            f"</th></tr></thead><tbody>{''.join(lines)}</tbody></table>"
        )
    else:
        libs = '<p class="quiet">Library versions: n/a</p>'
    return f'<section id="model"><h2>Model</h2><dl class="facts">{facts}</dl>{libs}</section>'


def _details(m: dict) -> str:
    """Everything else a person may need to find the run's parts."""
    outputs = m.get("outputs") if isinstance(m.get("outputs"), dict) else {}
    features = m.get("features") if isinstance(m.get("features"), list) else []
    keys = m.get("key_columns") if isinstance(m.get("key_columns"), list) else []
    names = ", ".join(map(str, features[:MAX_FEATURES]))
    if len(features) > MAX_FEATURES:
        names += f", … ({len(features) - MAX_FEATURES:,} more)"
    rows = [
        ("Input pattern", m.get("input_pattern")),
        ("Input format", m.get("input_format")),
        ("Features", f"{len(features):,}: {names}" if features else None),
        ("Key columns", ", ".join(map(str, keys)) or None),
        ("Runner", m.get("runner")),
        ("Model loads", m.get("model_loads")),
        ("Model load (launcher)", _seconds(_number(m.get("model_load_s_launcher")))),
        ("Prediction files", _count_of(outputs.get("predictions"))),
        ("Error files", _count_of(outputs.get("errors"))),
        ("MLflow run", m.get("mlflow_run_id")),
        ("Error", m.get("error")),
    ]
    for key in ("bigquery", "bigquery_errors"):
        bq = m.get(key)
        if isinstance(bq, dict):
            rows.append(
                (
                    f"BigQuery {'errors' if key.endswith('errors') else 'predictions'}",
                    f"{_int(bq.get('rows_loaded'), raw=True)} rows into {bq.get('table', NA)},"
                    f" partition {bq.get('partition', NA)}",
                )
            )
    facts = "".join(
        f"<dt>{_e(label)}</dt><dd>{_text(value)}</dd>"
        for label, value in rows
        if value is not None or label in ("Input pattern", "Runner")
    )
    return f'<section id="details"><h2>Run details</h2><dl class="facts">{facts}</dl></section>'


# --- charts -------------------------------------------------------------------------------------


def _hbar(fraction: float, kind: str = "", mark: float | None = None) -> str:
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


def _histogram(ident: str, counts: list[int], edges: list[float]) -> str:
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
            f"<title>{_e(_short(edges[k]))} to {_e(_short(edges[k + 1]))}: {c:,} rows</title>"
            "</rect>"
        )
    step = max(1, len(counts) // 4)
    ticks = sorted({*range(0, len(edges), step), len(edges) - 1})
    anchor = {0: "start", len(edges) - 1: "end"}  # the outer labels stay inside the chart
    labels = "".join(
        f'<text x="{x(edges[k]):.1f}" y="{h - 8}" text-anchor="{anchor.get(k, "middle")}">'
        f"{_e(_short(edges[k]))}</text>"
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


# --- values and formatting ------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escaped text of a value, quotes included (safe in text and in attributes)."""
    return html.escape(str(value), quote=True)


def _text(value: Any) -> str:
    """Escaped text of a value, "n/a" when it is missing."""
    return NA if value is None or value == "" else _e(value)


def _clip(value: Any, limit: int = 160) -> str:
    text = NA if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    """A finite int or float (not a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # an int too large for a float: shown as text instead
        return None


def _raw(value: float | None) -> str:
    """A number as a data-* attribute holds it: repr, or empty when missing."""
    return "" if value is None else repr(value)


def _dig(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _inputs(m: dict) -> list[dict]:
    """The manifest's per-file entries, each with its path as text."""
    inputs = m.get("inputs")
    if not isinstance(inputs, list):
        return []
    return [{**i, "path": str(i.get("path"))} for i in inputs if isinstance(i, dict)]


def _unreadable(m: dict) -> set[str]:
    """The input files that could not be read: listed in files_failed or marked failed."""
    listed = m.get("files_failed")
    paths = {str(p) for p in listed} if isinstance(listed, list) else set()
    return paths | {i["path"] for i in _inputs(m) if i.get("failed") is True}


def _counts(value: Any) -> list[int] | None:
    """A histogram's counts when they are all non-negative numbers and some are positive."""
    if not isinstance(value, list) or not value:
        return None
    if any(_number(c) is None or c < 0 for c in value) or not any(value):
        return None
    return [int(c) for c in value]


def _error_rate(m: dict) -> float | None:
    rate = _number(m.get("error_rate"))
    if rate is None:
        read, failed = (
            _number(_dig(m, "counts", "rows_read")),
            _number(_dig(m, "counts", "rows_failed")),
        )
        rate = failed / read if read and failed is not None else None
    return rate


def _duration(m: dict) -> float | None:
    """The run's seconds: the manifest's own, or finished_at minus started_at."""
    seconds = _number(m.get("duration_s"))
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


def _when(value: Any) -> str:
    """A timestamp as UTC to the second ("2026-11-26 18:16:40 UTC"), or as given."""
    t = _parse_time(value)
    if t is None:
        return NA if value is None else str(value)
    if t.tzinfo is None:
        return t.strftime("%Y-%m-%d %H:%M:%S")
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _int(value: Any, raw: bool = False) -> str:
    """A count with thousands separators, escaped ("n/a" when not a number)."""
    n = _number(value)
    if n is None:
        return NA if value is None else (str(value) if raw else _e(value))
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


def _pct(value: float | None) -> str:
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


def _seconds(value: float | None) -> str:
    if value is None:
        return NA
    if value < 60:
        return f"{value:.1f} s"
    s = round(value)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _rate(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _short(value: float) -> str:
    """An axis label: 3 significant digits, thousands separated when large."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _count_of(files: Any) -> str | None:
    return f"{len(files):,}" if isinstance(files, list) else None


def _library_mismatches(libraries: Any) -> Iterable[tuple[str, str, str]]:
    if not isinstance(libraries, dict):
        return []
    out = []
    for name, v in sorted(libraries.items()):
        if isinstance(v, dict) and v.get("saved") and v.get("running"):
            if v["saved"] != v["running"]:
                out.append((str(name), str(v["saved"]), str(v["running"])))
    return out


def _status_class(status: str | None) -> str:
    return {"succeeded": "ok", "failed": "bad"}.get(status or "", "unknown")
