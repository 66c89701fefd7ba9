"""The report's sections of what the run met: errors, unknown categories, files, drift, the
predictions, reasons, the model and the run's details.

Only the standard library (see pipeline.report).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.report import fmt
from pipeline.report.fmt import (
    MAX_CLASSES,
    MAX_ERROR_GROUPS,
    MAX_EXAMPLES,
    MAX_FEATURES,
    MAX_FILES,
    MAX_RECORD_CHARS,
    NA,
    PSI_WARNING,
)


def errors(groups: list) -> str:
    """The most frequent error reasons, each with a few of its records as the input held them."""
    groups = [g for g in groups if isinstance(g, dict)]
    if not groups:
        return (
            '<section id="errors"><h2>Errors</h2>'
            '<p class="quiet">No rejected records.</p></section>'
        )
    out = ['<section id="errors"><h2>Top error reasons</h2>']
    for g in groups[:MAX_ERROR_GROUPS]:
        count = fmt.number(g.get("count"))
        examples = g.get("examples") if isinstance(g.get("examples"), list) else []
        stage = g.get("stage") or NA
        out.append(
            f'<article class="error-group" data-stage="{fmt.e(stage)}"'
            f' data-count="{fmt.e(fmt.as_raw(count))}">'
            f'<header><span class="stage stage-{fmt.e(stage)}">{fmt.e(stage)}</span>'
            f'<span class="count"><strong class="num">{fmt.as_int(count)}</strong> '
            f"record{'' if count == 1 else 's'}</span>"
            "</header>"
            f'<p class="reason">{fmt.as_text(g.get("reason"))}</p>'
            + "".join(_example(x) for x in examples[:MAX_EXAMPLES] if isinstance(x, dict))
            + "</article>"
        )
    rest = groups[MAX_ERROR_GROUPS:]
    if rest:
        n = sum(fmt.number(g.get("count")) or 0 for g in rest)
        out.append(
            f'<p class="more" id="errors-more" data-count="{len(rest)}">… and {len(rest):,} more'
            f" reasons ({fmt.as_int(n)} records): see errors/*.jsonl</p>"
        )
    out.append("</section>")
    return "".join(out)


def unknown_categories(unknown: Any) -> str:
    """Per categorical feature, the rows that held a category the model was not trained on, and
    what became of them (rejected at validate, or scored as the model takes one)."""
    head = '<section id="unknown-categories"'
    if not isinstance(unknown, dict):
        return head + '><h2>Unknown categories</h2><p class="quiet">n/a</p></section>'
    rule = unknown.get("rule")
    head += (
        f' data-rule="{fmt.e(rule if isinstance(rule, str) else "")}"><h2>Unknown categories</h2>'
    )
    rows = []
    for treatment, label in (("rejected", "rejected at validate"), ("scored", "scored")):
        for name, n in fmt.unknown_rows(unknown, treatment, keep_zero=True):
            cls = ("warn" if treatment == "scored" else "failed") if n else ""
            rows.append(
                f'<tr class="{cls}" data-column="{fmt.e(name)}" data-treatment="{treatment}" '
                f'data-rows="{fmt.e(fmt.as_raw(n))}"><th scope="row" class="mono">{fmt.e(name)}'
                "</th>"
                f'<td class="num">{fmt.as_int(n)}</td><td>{label}</td></tr>'
            )
    if not rows:
        return head + '<p class="quiet">The model has no categorical features.</p></section>'
    return (
        head + '<p class="quiet">Rows holding a category the model was not trained on, per '
        "feature. Such a category is scored only where the model declares how it takes one (a "
        "scikit-learn encoder that ignores it), or where the run says "
        "<code>--unknown_categories score</code> and the model's library has a treatment for one "
        f"(XGBoost, LightGBM: a missing value); this run: <code>{fmt.as_text(rule)}</code>.</p>"
        '<table class="data"><thead><tr><th scope="col">Feature</th>'
        '<th scope="col" class="num">Rows</th><th scope="col">Those rows were</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _example(record: dict) -> str:
    """One rejected record: where it came from, then its raw text."""
    where = [f'<span class="mono">{fmt.as_text(record.get("source"))}</span>']
    for key, label in (("line", "line"), ("row_index", "row_index"), ("rows", "rows")):
        if fmt.number(record.get(key)) is not None:
            where.append(f"{label} {fmt.as_int(record[key])}")
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
        f'<figure class="example"><figcaption>{" · ".join(where)}{fmt.e(note)}</figcaption>'
        f'<pre class="record">{fmt.e(text)}</pre></figure>'
    )


def files(m: dict) -> str:
    """Counts per input file, the worst first; unreadable files highlighted."""
    inputs = fmt.input_list(m)
    unreadable = fmt.unreadable(m)
    # Older manifests may list a failed file that has no entry of its own.
    inputs += [{"path": p, "failed": True} for p in unreadable - {i["path"] for i in inputs}]
    if not inputs:
        return '<section id="files"><h2>Input files</h2><p class="quiet">n/a</p></section>'

    def failed(i: dict) -> bool:
        return i["path"] in unreadable

    def badness(i: dict) -> tuple:
        bad, read = fmt.number(i.get("rows_failed")) or 0, fmt.number(i.get("rows_read")) or 0
        return (not failed(i), -bad, -(bad / read if read else 0), str(i.get("path")))

    ranked = sorted(inputs, key=badness)
    shown, rest = ranked[:MAX_FILES], ranked[MAX_FILES:]
    rows = []
    for i in shown:
        bad, read = fmt.number(i.get("rows_failed")), fmt.number(i.get("rows_read"))
        cls = "failed" if failed(i) else ("warn" if bad else "")
        state = "unreadable" if failed(i) else ("rows rejected" if bad else "ok")
        rows.append(
            f'<tr class="{cls}" data-path="{fmt.e(i.get("path"))}" '
            f'data-failed="{str(failed(i)).lower()}">'
            f'<td class="mono path">{fmt.as_text(i.get("path"))}</td>'
            f'<td class="num" data-col="rows_read">{fmt.as_int(read)}</td>'
            f'<td class="num" data-col="rows_predicted">{fmt.as_int(i.get("rows_predicted"))}</td>'
            f'<td class="num" data-col="rows_failed">{fmt.as_int(bad)}</td>'
            f'<td class="num">{fmt.pct(bad / read) if bad is not None and read else NA}</td>'
            f'<td><span class="pill {cls or "ok"}">{state}</span></td></tr>'
        )
    more = ""
    if rest:
        read = sum(fmt.number(i.get("rows_read")) or 0 for i in rest)
        bad = sum(fmt.number(i.get("rows_failed")) or 0 for i in rest)
        more = (
            f'<p class="more" id="files-more" data-count="{len(rest)}">… and {len(rest):,} more '
            f"files ({fmt.as_int(read)} rows read, {fmt.as_int(bad)} failed): see manifest.json</p>"
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


def drift_section(drift: Any) -> str:
    """PSI per feature as horizontal bars, the largest first; above PSI_WARNING highlighted."""
    head = '<section id="drift"><h2>Drift</h2>'
    if not isinstance(drift, dict) or not drift:
        return head + '<p class="quiet">n/a: the model has no drift baseline.</p></section>'
    values = sorted(drift.items(), key=lambda kv: -(fmt.number(kv[1]) or 0))
    scale = max([PSI_WARNING * 1.5, *(fmt.number(v) or 0 for _, v in values)])
    mark = PSI_WARNING / scale
    rows = []
    for name, value in values[:MAX_FEATURES]:
        psi = fmt.number(value)
        high = psi is not None and psi > PSI_WARNING
        rows.append(
            f'<tr class="{"drifted" if high else ""}" data-feature="{fmt.e(name)}" '
            f'data-psi="{fmt.e(fmt.as_raw(psi))}"><th scope="row" class="mono">{fmt.e(name)}</th>'
            f'<td class="num">{NA if psi is None else f"{psi:.3f}"}</td>'
            f'<td class="bar">{fmt.hbar((psi or 0) / scale, "bad" if high else "", mark)}</td></tr>'
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


def reasons(explain: Any) -> str:
    """--explain: the features most often the rows' top reason tonight, with their share."""
    if not isinstance(explain, dict):
        return ""  # a run without --explain has no such section
    top = explain.get("top_reasons")
    head = (
        f'<section id="reasons" data-k="{fmt.e(explain.get("k"))}" '
        f'data-method="{fmt.e(explain.get("method"))}"><h2>Reason codes</h2>'
        f'<p class="quiet">The feature each row\'s score moved most for (reason_1), by how many '
        f"rows; contributions in {fmt.as_text(explain.get('units'))}"
        f" ({fmt.as_text(explain.get('method'))}, "
        f"expected value {fmt.as_text(explain.get('expected_value'))}).</p>"
    )
    if not isinstance(top, list) or not top:
        return head + '<p class="quiet">n/a: no row was scored.</p></section>'
    rows = []
    for item in top[:MAX_FEATURES]:
        if not isinstance(item, dict):
            continue
        name = item.get("feature")
        share = fmt.number(item.get("share"))
        label = fmt.e(name) if name is not None else '<span class="quiet">(no feature)</span>'
        rows.append(
            f'<tr data-feature="{fmt.e(name if name is not None else "")}" '
            f'data-rows="{fmt.e(fmt.as_raw(fmt.number(item.get("rows"))))}"'
            f' data-share="{fmt.e(fmt.as_raw(share))}">'
            f'<th scope="row" class="mono">{label}</th>'
            f'<td class="num">{fmt.as_int(item.get("rows"))}</td><td class="num">{fmt.pct(share)}'
            "</td>"
            f'<td class="bar">{fmt.hbar(share or 0, "accent")}</td></tr>'
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


def predictions(profile: Any) -> str:
    """Class shares, the positive-class probability histogram, or the regression histogram."""
    head = '<section id="predictions"><h2>Predictions</h2>'
    if not isinstance(profile, dict):
        return head + '<p class="quiet">n/a: no profile for this run.</p></section>'
    parts = [
        f'<p class="quiet">profile of <span class="num" id="profile-rows">'
        f"{fmt.as_int(profile.get('rows'))}</span> predicted rows</p>"
    ]
    classes = profile.get("class_counts")
    if isinstance(classes, dict) and classes:
        parts.append(_class_shares(classes))
    proba = profile.get("proba_histogram")
    if isinstance(proba, dict) and fmt.as_counts(proba.get("counts")):
        counts = fmt.as_counts(proba["counts"])
        edges = [k / len(counts) for k in range(len(counts) + 1)]
        parts.append(
            f"<h3>Probability {fmt.as_text(proba.get('column'))}</h3>"
            + fmt.histogram("proba-histogram", counts, edges)
        )
    hist = profile.get("prediction_histogram")
    if isinstance(hist, dict) and fmt.as_counts(hist.get("counts")):
        counts, edges = fmt.as_counts(hist["counts"]), hist.get("edges")
        ok = isinstance(edges, list) and len(edges) == len(counts) + 1
        if ok and all(fmt.number(x) is not None for x in edges) and edges[-1] > edges[0]:
            parts.append(
                "<h3>Predicted values</h3>" + fmt.histogram("prediction-histogram", counts, edges)
            )
    if len(parts) == 1:
        parts.append('<p class="quiet">n/a: the profile has no distribution.</p>')
    return head + "".join(parts) + "</section>"


def _class_shares(classes: dict) -> str:
    ranked = sorted(classes.items(), key=lambda kv: -(fmt.number(kv[1]) or 0))
    total = sum(fmt.number(v) or 0 for v in classes.values())
    rows = []
    for label, count in ranked[:MAX_CLASSES]:
        share = (fmt.number(count) or 0) / total if total else 0
        rows.append(
            f'<tr data-class="{fmt.e(label)}" data-count="{fmt.e(fmt.as_raw(fmt.number(count)))}">'
            f'<th scope="row" class="mono">{fmt.e(label)}</th><td class="num">{fmt.as_int(count)}'
            "</td>"
            f'<td class="num">{fmt.pct(share)}</td><td class="bar">{fmt.hbar(share, "accent")}</td>'
            "</tr>"
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


def model_section(model: Any) -> str:
    """What scored the run: URI, version, digest and the library versions it was saved with."""
    model = model if isinstance(model, dict) else {}
    rows = [
        ("URI", "model-uri", model.get("uri")),
        ("Version", "model-version", model.get("version")),
        ("SHA-256", "model-sha256", model.get("sha256")),
        ("Model's MLflow run", "model-run-id", model.get("run_id")),
    ]
    facts = "".join(
        f'<dt>{label}</dt><dd class="mono" id="{ident}">{fmt.as_text(value)}</dd>'
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
                f'<tr class="{"warn" if differ else ""}" data-library="{fmt.e(name)}">'
                f'<th scope="row">{fmt.e(name)}</th><td class="mono">{fmt.as_text(saved)}</td>'
                f'<td class="mono">{fmt.as_text(running)}</td>'
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


def details(m: dict) -> str:
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
        ("Model load (launcher)", fmt.as_seconds(fmt.number(m.get("model_load_s_launcher")))),
        ("Prediction files", fmt.count_of(outputs.get("predictions"))),
        ("Error files", fmt.count_of(outputs.get("errors"))),
        ("MLflow run", m.get("mlflow_run_id")),
        ("Error", m.get("error")),
    ]
    for key in ("bigquery", "bigquery_errors"):
        bq = m.get(key)
        if isinstance(bq, dict):
            rows.append(
                (
                    f"BigQuery {'errors' if key.endswith('errors') else 'predictions'}",
                    f"{fmt.as_int(bq.get('rows_loaded'), raw=True)} rows into"
                    f" {bq.get('table', NA)},"
                    f" partition {bq.get('partition', NA)}",
                )
            )
    facts = "".join(
        f"<dt>{fmt.e(label)}</dt><dd>{fmt.as_text(value)}</dd>"
        for label, value in rows
        if value is not None or label in ("Input pattern", "Runner")
    )
    return f'<section id="details"><h2>Run details</h2><dl class="facts">{facts}</dl></section>'
