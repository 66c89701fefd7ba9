"""The report's sections of tonight against the nights before: the banner and what needs
attention, the numbers, the history and the night checks, where the output went.

Only the standard library (see pipeline.report).
"""

from __future__ import annotations

from typing import Any

from pipeline.history import night_brief, outliers
from pipeline.report import fmt
from pipeline.report.fmt import NA, PSI_WARNING, STAGES


def banner(m: dict, status: str | None, error_groups: list[dict]) -> str:
    """The status, big and coloured, what the run was, and what needs attention."""
    started, finished = fmt.when(m.get("started_at")), fmt.when(m.get("finished_at"))
    return (
        '<header class="banner">'
        f'<p class="status" id="status" data-status="{fmt.e(status or "unknown")}">'
        f"{fmt.e((status or NA).upper())}</p>"
        '<div class="what">'
        f'<h1>Scoring run <span id="run-id" class="mono">{fmt.as_text(m.get("run_id"))}</span></h1>'
        f'<p>run date <strong id="run-date">{fmt.as_text(m.get("run_date"))}</strong>'
        f' · started <span id="started-at">{fmt.e(started)}</span>'
        f' · finished <span id="finished-at">{fmt.e(finished)}</span></p>'
        f'<p>input <span class="mono">{fmt.as_text(m.get("input_pattern"))}</span>'
        f' · model version <span class="mono">{fmt.as_text(fmt.dig(m, "model", "version"))}</span>'
        "</p>"
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
        message = fmt.clip(check.get("message"))
        items.append(("bad", "#checks", f"Night check {check.get('check', NA)} failed: {message}"))
    for check in _list(fmt.dig(m, "checks", "skipped")):
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
    n = len(_list(fmt.dig(m, "history", "ignored")))
    if n:
        items.append(
            ("warn", "#history-ignored", f"{n:,} folder{'s' * (n != 1)} left out of the history")
        )
    n = len(fmt.unreadable(m))
    if n:
        items.append(("bad", "#files", f"{n:,} input file{'s' * (n != 1)} could not be read"))
    rate, limit = fmt.error_rate(m), fmt.number(m.get("max_error_rate"))
    failed = fmt.number(fmt.dig(m, "counts", "rows_failed"))
    if rate is not None and limit is not None and rate > limit:
        items.append(
            (
                "bad",
                "#errors",
                f"Error rate {fmt.pct(rate)} is over the max allowed {fmt.pct(limit)}",
            )
        )
    elif failed:
        items.append(
            ("warn", "#errors", f"{fmt.as_int(failed)} rows rejected, within the max allowed")
        )
    if error_groups and isinstance(error_groups[0], dict):
        top = error_groups[0]
        items.append(
            (
                "info",
                "#errors",
                f"Top error ({top.get('stage', NA)}): {fmt.clip(top.get('reason'))}",
            )
        )
    drift = m.get("drift") if isinstance(m.get("drift"), dict) else {}
    drifted = sorted(
        ((k, v) for k, v in drift.items() if fmt.number(v) is not None and v > PSI_WARNING),
        key=lambda kv: -kv[1],
    )
    if drifted:
        names = ", ".join(f"{k} ({v:.2f})" for k, v in drifted[:5])
        more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
        items.append(("warn", "#drift", f"Drift (PSI > {PSI_WARNING}): {names}{more}"))
    scored = fmt.unknown_rows(m.get("unknown_categories"), "scored")
    if scored:
        names = ", ".join(f"{k} ({fmt.as_int(n)})" for k, n in scored[:5])
        more = f" and {len(scored) - 5} more" if len(scored) > 5 else ""
        items.append(
            (
                "warn",
                "#unknown-categories",
                f"Rows scored with an unknown category: {names}{more}",
            )
        )
    for name, saved, running in fmt.library_mismatches(fmt.dig(m, "model", "library_versions")):
        items.append(("warn", "#model", f"{name} saved with {saved}, running {running}"))
    if not items:
        ok = status == "succeeded"
        text = "Nothing needs attention" if ok else "The manifest gives no reason"
        items.append(("ok" if ok else "info", "#numbers", text))
    return (
        "<ul>"
        + "".join(
            f'<li class="{kind}"><a href="{href}">{fmt.e(text)}</a></li>'
            for kind, href, text in items
        )
        + "</ul>"
    )


def numbers(m: dict) -> str:
    """The key numbers: rows read, predicted and failed, error rate, duration, throughput."""
    counts = fmt.dig(m, "counts") if isinstance(fmt.dig(m, "counts"), dict) else {}
    by_stage = counts.get("rows_failed_by_stage")
    by_stage = by_stage if isinstance(by_stage, dict) else {}
    stages = [*STAGES, *(s for s in by_stage if s not in STAGES)]
    read, predicted = fmt.number(counts.get("rows_read")), fmt.number(counts.get("rows_predicted"))
    failed = fmt.number(counts.get("rows_failed"))
    rate, limit = fmt.error_rate(m), fmt.number(m.get("max_error_rate"))
    over = rate is not None and limit is not None and rate > limit
    duration = fmt.duration(m)
    rows_per_s = fmt.number(m.get("rows_per_s"))
    if rows_per_s is None and duration and read is not None:
        rows_per_s = read / duration
    inputs = fmt.input_list(m)
    unreadable = len(fmt.unreadable(m))
    files = f"in {len(inputs):,} file{'s' * (len(inputs) != 1)}" if inputs else "files: n/a"
    if unreadable:
        files += f", <strong>{unreadable:,} unreadable</strong>"
    share = f"{fmt.pct(predicted / read)} of rows read" if read and predicted is not None else NA
    stage_list = "".join(
        f'<li><span>{fmt.e(s)}</span> <strong class="num" id="failed-{fmt.e(s)}">'
        f"{fmt.as_int(by_stage.get(s))}</strong></li>"
        for s in stages
    )
    verdict = " — <strong>over the limit</strong>" if over else ""
    return (
        '<section id="numbers" aria-label="Key numbers"><div class="cards">'
        f"{_card('Rows read', 'rows-read', fmt.as_int(read), files)}"
        f"{_card('Predicted', 'rows-predicted', fmt.as_int(predicted), share)}"
        f'<div class="card{" bad" if failed else ""}"><h3>Failed</h3>'
        f'<p class="big num" id="rows-failed">{fmt.as_int(failed)}</p>'
        f'<ul class="stages" aria-label="failed by stage">{stage_list}</ul></div>'
        f'<div class="card{" bad" if over else ""}"><h3>Error rate</h3>'
        f'<p class="big num" id="error-rate" data-value="{fmt.e(fmt.as_raw(rate))}">{fmt.pct(rate)}'
        "</p>"
        '<p>max allowed <span class="num" id="max-error-rate"'
        f' data-value="{fmt.e(fmt.as_raw(limit))}">'
        f"{fmt.pct(limit)}</span>{verdict}</p></div>"
        f'<div class="card"><h3>Duration</h3>'
        f'<p class="big num" id="duration" data-value="{fmt.e(fmt.as_raw(duration))}">'
        f"{fmt.as_seconds(duration)}</p>"
        f'<p><span class="num" id="throughput" data-value="{fmt.e(fmt.as_raw(rows_per_s))}">'
        f"{fmt.as_rate(rows_per_s)}</span> rows/s</p></div>"
        "</div></section>"
    )


def _list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _previous(m: dict) -> list[dict]:
    return _list(fmt.dig(m, "history", "nights"))


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


def history(m: dict) -> str:
    """The previous nights of the same job and tonight, one row each, with the night checks;
    tonight's numbers far outside the previous nights' range are highlighted."""
    previous = _previous(m)
    source = fmt.dig(m, "history", "source")
    far = _far(m)
    rows = []
    version = None
    nights = [*previous, {**night_brief(m), "tonight": True}]
    for i, night in enumerate(nights):
        tonight = night.get("tonight") is True
        changed = i > 0 and night.get("model_version") != version
        version = night.get("model_version")
        cells = [
            f'<th scope="row" class="mono">{fmt.as_text(night.get("run_date"))}'
            + ('<br><span class="pill">tonight</span>' if tonight else "")
            + "</th>",
            f'<td><span class="pill {_status_pill(night.get("status"))}">'
            f"{fmt.as_text(night.get('status'))}</span></td>",
        ]
        for col, _ in _HISTORY_COLS:
            text, raw = _history_cell(night, col)
            hot = tonight and col in far
            flag = ' data-outlier="true"'
            title = f' title="{fmt.e(far[col])}"' if hot else ""
            cells.append(
                f'<td class="num{" outlier" if hot else ""}" data-col="{col}" '
                f'data-value="{fmt.e(fmt.as_raw(raw))}"{flag if hot else ""}{title}>{text}</td>'
            )
        mark = ' <span class="pill warn">changed</span>' if changed else ""
        cells.append(f'<td class="mono" data-col="model_version">{fmt.as_text(version)}{mark}</td>')
        cells.append(f'<td data-col="quality">{_quality(night.get("quality"))}</td>')
        attrs = f' data-run-date="{fmt.e(night.get("run_date"))}"'
        attrs += ' class="tonight" data-tonight="true"' if tonight else ""
        attrs += ' data-model-changed="true"' if changed else ""
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    head = "".join(f'<th scope="col" class="num">{h}</th>' for _, h in _HISTORY_COLS)
    if previous:
        note = (
            f"The {len(previous)} previous night{'s' * (len(previous) != 1)} of this job "
            f"(from {fmt.e(source)}) and tonight. A number of tonight's far outside the previous "
            "nights' range is highlighted; a model version change is marked."
        )
    else:
        note = f"No previous night of this job was found ({fmt.as_text(source)})."
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
        f'<li data-ignored="{fmt.e(i.get("run_date"))}"><span class="pill warn">ignored</span> '
        f'<span class="mono">{fmt.as_text(i.get("folder"))}</span>:'
        f" {fmt.e(fmt.clip(i.get('reason'), 400))}"
        "</li>"
        for i in _list(fmt.dig(m, "history", "ignored"))
    ]
    if not items:
        return ""
    return f'<ul class="checks" id="history-ignored">{"".join(items)}</ul>'


def _history_cell(night: dict, col: str) -> tuple[str, float | None]:
    """A history cell's text and its number."""
    if col == "rows_read":
        n = fmt.number(night.get("rows_read"))
        return fmt.as_int(n), n
    if col == "error_rate":
        rate = fmt.number(night.get("error_rate"))
        return fmt.pct(rate), rate
    if col == "duration_s":
        seconds = fmt.number(night.get("duration_s"))
        return fmt.as_seconds(seconds), seconds
    if col == "top_psi":
        top = night.get("top_drift") if isinstance(night.get("top_drift"), dict) else {}
        psi = fmt.number(top.get("psi"))
        if psi is None:
            return NA, None
        return f'<span class="mono">{fmt.e(top.get("feature"))}</span> {psi:.3f}', psi
    summary = night.get("prediction") if isinstance(night.get("prediction"), dict) else {}
    value = fmt.number(summary.get("value"))
    if value is None:
        return NA, None
    if summary.get("kind") == "positive_share":
        return f'{fmt.pct(value)} <span class="quiet">= {fmt.e(summary.get("class"))}</span>', value
    return f'{value:.4g} <span class="quiet">mean</span>', value


def _quality(quality: Any) -> str:
    metrics = fmt.dig(quality, "metrics")
    if not isinstance(metrics, dict) or not metrics:
        return f'<span class="quiet">{NA}</span>'
    items = "".join(
        f'<span class="metric" data-metric="{fmt.e(k)}"'
        f' data-value="{fmt.e(fmt.as_raw(fmt.number(v)))}">'
        f"{fmt.e(k)} {fmt.number(v):.3f}</span> "
        for k, v in list(metrics.items())[:6]
        if fmt.number(v) is not None
    )
    labelled = fmt.number(fmt.dig(quality, "rows_labelled"))
    return items + (
        f'<span class="quiet">({fmt.as_int(labelled)} labelled)</span>' if labelled else ""
    )


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
            f' <span class="mono">--{name} {fmt.e(limit)}</span>: {fmt.e(fmt.clip(text, 400))}</li>'
        )
    if not items:
        return (
            '<p class="quiet" id="checks">No night check is set (--min_rows, --max_drift, '
            "--max_rows_change).</p>"
        )
    return f'<ul id="checks" class="checks">{"".join(items)}</ul>'


def where(m: dict) -> str:
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
        f'<dt>{label}</dt><dd><span class="mono" id="{ident}">{fmt.e(path)}</span>'
        + (f" ({fmt.count_of(files)})" if isinstance(files, list) else "")
        + "</dd>"
        for ident, label, path, files in rows
    )
    rerun = m.get("rerun_command")
    command = (
        f'<h3>Rerun this night</h3><pre class="record" id="rerun-command">{fmt.e(rerun)}</pre>'
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
