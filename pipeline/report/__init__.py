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

import functools
import importlib.resources
import string

from pipeline.report import details, fmt, night
from pipeline.report.fmt import CSP, NA

# The report's limits and its copies of the pipeline's constants, for callers and tests.
from pipeline.report.fmt import MAX_FILES as MAX_FILES
from pipeline.report.fmt import PSI_WARNING as PSI_WARNING
from pipeline.report.fmt import STAGES as STAGES


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
            night.banner(m, status, error_groups),
            "<main>",
            night.numbers(m),
            night.history(m),
            details.errors(error_groups or []),
            details.unknown_categories(m.get("unknown_categories")),
            details.files(m),
            details.drift_section(m.get("drift")),
            details.predictions(profile),
            details.reasons(m.get("explain")),
            details.model_section(m.get("model")),
            night.where(m),
            details.details(m),
            "</main>",
            f"<footer>Run report of {fmt.as_text(m.get('producer'))} · self-contained: this page"
            " loads"
            " nothing from the network</footer>",
        ]
    )
    title = f"{(status or 'unknown').upper()} · scoring run {m.get('run_id') or NA}"
    page = _asset("page.html").substitute(
        csp=CSP,
        title=fmt.e(title),
        css=_asset("report.css").template,
        status_class=fmt.status_class(status),
        body=body,
    )
    # A record may hold a lone surrogate (JSON allows "\ud800"): make the page encodable.
    return page.encode("utf-8", "replace").decode("utf-8")


@functools.cache
def _asset(name: str) -> string.Template:
    """A file of the page's skeleton and styles (pipeline/report/assets/, package data)."""
    text = importlib.resources.files("pipeline.report").joinpath("assets", name).read_text()
    return string.Template(text)
