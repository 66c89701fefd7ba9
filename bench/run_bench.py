"""Runs the benchmark cases as separate processes and writes bench/REPORT.md.

Usage: python bench/run_bench.py [--quick] [--cases NAME,PATTERN,...] [--repeats N]
Each run is a whole process (wall time measured around it, peak RSS from /usr/bin/time -f %M,
or from getrusage(RUSAGE_CHILDREN) in a fresh wrapper process when /usr/bin/time is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import glob
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PACKAGES = ("pipeline", "transforms", "models", "scoring", "service")
GNU_TIME = Path("/usr/bin/time")
OUT = "<tmpdir>"  # replaced by a fresh output directory in every run
# Fallback when /usr/bin/time is missing: argv[1] = file for the peak RSS (KB), argv[2:] = command.
_RUSAGE_WRAPPER = """\
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case: the command (after the interpreter) and what it processes."""

    name: str
    description: str
    argv: list[str]
    rows: int
    inputs: str  # glob that must match files for the case to run
    large: bool = False  # a 4M-row case (left out by --quick)
    ok_codes: frozenset[int] = frozenset({0})


@dataclasses.dataclass
class Result:
    """The runs of one case: wall times (s) and peak RSS (MB), or why it failed."""

    case: Case
    walls: list[float] = dataclasses.field(default_factory=list)
    rss_mb: list[float] = dataclasses.field(default_factory=list)
    loads: list[float] = dataclasses.field(default_factory=list)  # 1-min load before each run
    error: str | None = None

    @property
    def wall(self) -> float | None:
        """Median wall time, None when there is no successful run."""
        return statistics.median(self.walls) if self.walls and not self.error else None

    @property
    def rss(self) -> float | None:
        """Median peak RSS in MB, None when there is no successful run."""
        return statistics.median(self.rss_mb) if self.rss_mb and not self.error else None


@dataclasses.dataclass(frozen=True)
class Ratio:
    """A ratio of two cases' wall times (or peak RSS) and its target."""

    label: str
    numerator: str
    denominator: str
    op: str  # "<=" or ">=", or "" for a figure measured without a target
    bound: float
    metric: str = "wall"  # or "rss"

    def value(self, results: dict[str, Result]) -> float | None:
        """The ratio, None when a case is missing or failed.

        A name "a-b" stands for the difference of two cases' values (the cost of the rows one
        case has more than the other).
        """
        a, b = self._get(results, self.numerator), self._get(results, self.denominator)
        return a / b if a is not None and b else None

    def _get(self, results: dict[str, Result], name: str) -> float | None:
        names = name.split("-")
        values = [getattr(results[n], self.metric) if n in results else None for n in names]
        if any(v is None for v in values):
            return None
        return values[0] - sum(values[1:])

    def verdict(self, value: float | None) -> str:
        """met / not met / n/a."""
        if value is None:
            return "n/a"
        if not self.op:
            return "measured"
        met = value <= self.bound if self.op == "<=" else value >= self.bound
        return "met" if met else "not met"


def _rel(path: str | Path) -> str:
    """The path relative to the repository (the runs' working directory) when inside it."""
    path = Path(path).absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def build_cases(data: Path) -> list[Case]:
    """Every case, in the order they run (paths relative to the repository when inside it)."""

    def project(inputs: str, model: str, *extra: str) -> list[str]:
        model_path = _rel(data / f"{model}.joblib")
        base = ["-m", "pipeline.run", "--input", inputs, "--model", model_path, "--output", OUT]
        return [*base, "--runner", "DirectRunner", *extra]

    def mlflow(name: str) -> list[str]:
        registry = f"sqlite:///{data / 'mlflow.db'}"
        rows = _rel(data / "rows1m" / "*.parquet")
        argv = project(rows, "light", "--mlflow_tracking_uri", registry)
        argv[argv.index("--model") + 1] = f"models:/{name}/1"  # instead of the joblib file
        return argv

    def script(name: str, inputs: str, model: str) -> list[str]:
        model_path = _rel(data / f"{model}.joblib")
        return [_rel(BENCH / name), "--input", inputs, "--model", model_path, "--output", OUT]

    cases = []
    for size, rows in (("1m", 1_000_000), ("4m", 4_000_000)):
        inputs = _rel(data / f"rows{size}" / "*.parquet")
        for model in ("light", "heavy"):
            cases += [
                Case(
                    f"project_{model}_{size}",
                    f"pipeline.run, {model} model, {rows:,} rows in 8 Parquet files",
                    project(inputs, model),
                    rows,
                    inputs,
                    size == "4m",
                ),
                Case(
                    f"plain_{model}_{size}",
                    f"plain_loop.py (pyarrow + predict_proba, file by file), {model}, {size}",
                    script("plain_loop.py", inputs, model),
                    rows,
                    inputs,
                    size == "4m",
                ),
            ]
    rows1m = _rel(data / "rows1m" / "*.parquet")
    csv1m = _rel(data / "csv1m" / "*.csv")
    jsonl1m = _rel(data / "jsonl1m" / "*.jsonl")
    csv4m = _rel(data / "csv4m" / "*.csv")
    jsonl4m = _rel(data / "jsonl4m" / "*.jsonl")
    one_file = _rel(data / "rows4m_one" / "rows.parquet")
    dirty = _rel(data / "csv1m_dirty" / "*.csv")
    one_row = _rel(data / "one_row" / "*.parquet")
    color = _rel(data / "rows1m_color" / "*.parquet")
    poison = _rel(data / "rows1m_poison" / "*.parquet")

    def project_model(inputs: str, model_file: str) -> list[str]:
        argv = project(inputs, "light")
        argv[argv.index("--model") + 1] = _rel(data / model_file)  # a native file, not .joblib
        return argv

    def plain_booster(inputs: str, model_file: str) -> list[str]:
        model = _rel(data / model_file)
        return [
            _rel(BENCH / "plain_booster.py"),
            "--input",
            inputs,
            "--model",
            model,
            "--output",
            OUT,
        ]

    boosters = [
        Case(
            f"project_{kind}_1m",
            f"pipeline.run, {what} (200 trees), 1M rows in 8 Parquet files",
            project_model(rows1m, model_file),
            1_000_000,
            rows1m,
        )
        for kind, model_file, what in (
            ("xgb", "xgb.json", "a native XGBoost .json file"),
            ("xgb_sklearn", "xgb_sklearn.joblib", "an XGBClassifier in a joblib file"),
            ("lgb", "lgb.txt", "a native LightGBM .txt file"),
            ("lgb_sklearn", "lgb_sklearn.joblib", "an LGBMClassifier in a joblib file"),
        )
    ]
    mlflow_xgb = project_model(rows1m, "xgb.json")
    mlflow_xgb[mlflow_xgb.index("--model") + 1] = "models:/xgb@champion"
    mlflow_xgb += ["--mlflow_tracking_uri", f"sqlite:///{data / 'mlflow_boosters.db'}"]
    boosters += [
        Case(
            "project_mlflow_xgb_1m",
            "pipeline.run, the XGBClassifier from a sqlite MLflow registry (xgboost flavour)",
            mlflow_xgb,
            1_000_000,
            rows1m,
        ),
        Case(
            "plain_xgb_1m",
            "plain_booster.py (pyarrow, one matrix per file, Booster.inplace_predict), xgb.json",
            plain_booster(rows1m, "xgb.json"),
            1_000_000,
            rows1m,
        ),
        Case(
            "plain_lgb_1m",
            "plain_booster.py (pyarrow, one matrix per file, Booster.predict), lgb.txt",
            plain_booster(rows1m, "lgb.txt"),
            1_000_000,
            rows1m,
        ),
    ]
    cases += boosters
    # --explain 3 against the same run without it, and against the library's own contribution
    # call in a plain loop (bench/plain_explain.py). Exact tree contributions (TreeSHAP) cost
    # about a thousand times a prediction: the 200-tree models run on 20,000 rows, and 20-tree
    # depth-4 ones on 1M.
    for kind, model_file, what, size in EXPLAINED:
        inputs = _rel(data / f"rows{size}" / "*.parquet")
        rows = {"1m": 1_000_000, "20k": 20_000}[size]
        explained = project_model(inputs, model_file) + ["--explain", "3"]
        plain = [_rel(BENCH / "plain_explain.py"), "--input", inputs, "--model"]
        plain += [_rel(data / model_file), "--output", OUT, "--k", "3"]
        if kind != "light_drift":  # the run without --explain (light_drift's is below)
            cases.append(
                Case(
                    f"project_{kind}_{size}",
                    f"pipeline.run, {what.split(',')[0]}, {rows:,} rows",
                    project_model(inputs, model_file),
                    rows,
                    inputs,
                )
            )
        cases += [
            Case(
                f"project_{kind}_explain3_{size}",
                f"pipeline.run --explain 3, {what}, {rows:,} rows",
                explained,
                rows,
                inputs,
            ),
            Case(
                f"plain_explain_{kind}_{size}",
                f"plain_explain.py (pyarrow + the library's contributions, top 3), {what}",
                plain,
                rows,
                inputs,
            ),
        ]
    return cases + [
        Case(
            "project_light_drift_1m",
            "pipeline.run, light model with a drift baseline (PSI per feature in the same pass)",
            project(rows1m, "light_drift"),
            1_000_000,
            rows1m,
        ),
        Case(
            "project_mlflow_sklearn_1m",
            "pipeline.run, the light model from a sqlite MLflow registry (sklearn flavour)",
            mlflow("light_sklearn"),
            1_000_000,
            rows1m,
        ),
        Case(
            "project_mlflow_pyfunc_1m",
            "pipeline.run, the light model as a pyfunc-only MLflow model (pandas per batch)",
            mlflow("light_pyfunc"),
            1_000_000,
            rows1m,
        ),
        Case(
            "project_strict_clean_1m",
            "pipeline.run, one-hot + LogisticRegression (handle_unknown='error'), 1M rows",
            project(color, "strict"),
            1_000_000,
            color,
        ),
        Case(
            "project_strict_poison_1m",
            "the same with one row of an unseen category: a validate error (exit 1)",
            project(poison, "strict"),
            1_000_000,
            poison,
            ok_codes=frozenset({1}),
        ),
        Case(
            "runinference_light_1m",
            "runinference.py (ReadFromParquet, KeyedModelHandler(SklearnModelHandlerNumpy)), light",
            script("runinference.py", rows1m, "light"),
            1_000_000,
            rows1m,
        ),
        Case(
            "project_csv_light_1m",
            "pipeline.run on 1M rows in 8 CSV files, light",
            project(csv1m, "light"),
            1_000_000,
            csv1m,
        ),
        Case(
            "plain_csv_light_1m",
            "plain_loop.py with pyarrow.csv.read_csv, light",
            script("plain_loop.py", csv1m, "light"),
            1_000_000,
            csv1m,
        ),
        Case(
            "project_jsonl_light_1m",
            "pipeline.run on 1M rows in 8 JSON Lines files, light",
            project(jsonl1m, "light"),
            1_000_000,
            jsonl1m,
        ),
        Case(
            "plain_jsonl_light_1m",
            "plain_loop.py with pyarrow.json.read_json, light",
            script("plain_loop.py", jsonl1m, "light"),
            1_000_000,
            jsonl1m,
        ),
        *(
            Case(
                f"{who}_{fmt}_light_4m",
                f"{what} on 4M rows in 8 {label} files, light",
                project(inputs, "light")
                if who == "project"
                else script("plain_loop.py", inputs, "light"),
                4_000_000,
                inputs,
                True,
            )
            for fmt, label, inputs in (("csv", "CSV", csv4m), ("jsonl", "JSON Lines", jsonl4m))
            for who, what in (("project", "pipeline.run"), ("plain", "plain_loop.py"))
        ),
        Case(
            "project_onefile_2workers_light_4m",
            "pipeline.run on rows4m as ONE Parquet file of 32 row groups, 2 worker threads",
            project(
                one_file,
                "light",
                "--direct_num_workers",
                "2",
                "--direct_running_mode",
                "multi_threading",
            ),
            4_000_000,
            one_file,
            True,
        ),
        Case(
            "project_2processes_light_4m",
            "pipeline.run on rows4m (8 files), 2 worker processes (multi_processing)",
            project(
                _rel(data / "rows4m" / "*.parquet"),
                "light",
                "--direct_num_workers",
                "2",
                "--direct_running_mode",
                "multi_processing",
            ),
            4_000_000,
            _rel(data / "rows4m" / "*.parquet"),
            True,
        ),
        Case(
            "project_dirty_csv_light_1m",
            "pipeline.run on the CSV with 1% bad rows, --max_error_rate 0.05 (exit 0 or 1)",
            project(dirty, "light", "--max_error_rate", "0.05"),
            1_000_000,
            dirty,
            ok_codes=frozenset({0, 1}),
        ),
        Case(
            "project_one_row",
            "pipeline.run on one row, light",
            project(one_row, "light"),
            1,
            one_row,
        ),
        Case(
            "bare_beam",
            "bare_beam.py: Create([1]) | Map(identity) on the DirectRunner",
            [_rel(BENCH / "bare_beam.py")],
            1,
            _rel(BENCH / "bare_beam.py"),
        ),
    ]


# --explain's cases: (model, file, what explains it, rows).
EXPLAINED = (
    ("xgb_sklearn", "xgb_sklearn.joblib", "XGBClassifier, pred_contribs", "20k"),
    ("lgb_sklearn", "lgb_sklearn.joblib", "LGBMClassifier, pred_contrib", "20k"),
    ("heavy", "heavy.joblib", "HistGradientBoostingClassifier, shap TreeExplainer", "20k"),
    ("xgb_small", "xgb_small.joblib", "XGBClassifier 20 trees depth 4, pred_contribs", "1m"),
    ("lgb_small", "lgb_small.joblib", "LGBMClassifier 20 trees 15 leaves, pred_contrib", "1m"),
    ("hgb_small", "hgb_small.joblib", "HistGradientBoosting 20 iter. depth 4, shap", "1m"),
    ("light_drift", "light_drift.joblib", "scaler + LogisticRegression, coef x (x - mean)", "1m"),
)
RATIOS = [
    *(
        Ratio(f"project/plain {m} {s.upper()}", f"project_{m}_{s}", f"plain_{m}_{s}", "<=", b)
        for m, s, b in (
            ("light", "4m", 1.1),
            ("heavy", "4m", 1.1),
            ("light", "1m", 1.5),
            ("heavy", "1m", 1.2),
        )
    ),
    *(
        Ratio(
            f"per extra row (4M - 1M), project/plain {m}",
            f"project_{m}_4m-project_{m}_1m",
            f"plain_{m}_4m-plain_{m}_1m",
            "<=",
            1.0,
        )
        for m in ("light", "heavy")
    ),
    Ratio("runinference/project light 1M", "runinference_light_1m", "project_light_1m", ">=", 8),
    Ratio("CSV project/plain pyarrow.csv", "project_csv_light_1m", "plain_csv_light_1m", "<=", 1.6),
    Ratio(
        "JSON Lines project/plain pyarrow.json",
        "project_jsonl_light_1m",
        "plain_jsonl_light_1m",
        "<=",
        1.6,
    ),
    *(
        Ratio(
            f"per extra row (4M - 1M), project/plain {label}",
            f"project_{fmt}_light_4m-project_{fmt}_light_1m",
            f"plain_{fmt}_light_4m-plain_{fmt}_light_1m",
            "<=",
            1.2,
        )
        for fmt, label in (("csv", "CSV"), ("jsonl", "JSON Lines"))
    ),
    Ratio(
        "one 4M file (32 row groups) on 2 workers / 8 files on 1 worker",
        "project_onefile_2workers_light_4m",
        "project_light_4m",
        "<=",
        0.9,
    ),
    Ratio(
        "2 worker processes / 1 worker, light 4M",
        "project_2processes_light_4m",
        "project_light_4m",
        "",
        0,
    ),
    Ratio(
        "dirty/clean CSV (project)", "project_dirty_csv_light_1m", "project_csv_light_1m", "<=", 1.3
    ),
    Ratio("one row: project/bare Beam", "project_one_row", "bare_beam", "<=", 1.5),
    Ratio("drift overhead, light 1M", "project_light_drift_1m", "project_light_1m", "<=", 1.1),
    Ratio(
        "MLflow sklearn flavour/joblib file", "project_mlflow_sklearn_1m", "project_light_1m", "", 0
    ),
    Ratio("MLflow pyfunc-only/joblib file", "project_mlflow_pyfunc_1m", "project_light_1m", "", 0),
    Ratio(
        "one unseen category/clean (a validate error)",
        "project_strict_poison_1m",
        "project_strict_clean_1m",
        "<=",
        2,
    ),
    *(
        Ratio(f"--explain 3 {m} {size}: {what}", f"project_{m}_explain3_{size}", other, "", 0)
        for m, _, _, size in EXPLAINED
        for what, other in (
            ("with/without", f"project_{m}_{size}"),
            ("project/plain loop", f"plain_explain_{m}_{size}"),
        )
    ),
    Ratio("project/plain XGBoost .json 1M", "project_xgb_1m", "plain_xgb_1m", "<=", 1.5),
    Ratio("project/plain LightGBM .txt 1M", "project_lgb_1m", "plain_lgb_1m", "<=", 1.2),
    Ratio("XGBClassifier joblib/native .json", "project_xgb_sklearn_1m", "project_xgb_1m", "", 0),
    Ratio("MLflow xgboost flavour/native .json", "project_mlflow_xgb_1m", "project_xgb_1m", "", 0),
    *(
        Ratio(f"project peak RSS 4M/1M {m}", f"project_{m}_4m", f"project_{m}_1m", "<=", 1.1, "rss")
        for m in ("light", "heavy")
    ),
]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_once(case: Case, python: str, timeout: float) -> tuple[float, float | None, str | None]:
    """Runs the case once in a fresh output directory: (wall s, peak RSS MB, error or None)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        rss_file = os.path.join(tmp, "rss")
        command = [python, *(a.replace(OUT, os.path.join(tmp, "out")) for a in case.argv)]
        if GNU_TIME.exists():
            wrapped = [str(GNU_TIME), "-f", "%M", "-o", rss_file, *command]
        else:
            wrapped = [python, "-c", _RUSAGE_WRAPPER, rss_file, *command]
        started = time.perf_counter()
        proc = subprocess.Popen(
            wrapped,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return time.perf_counter() - started, None, f"timed out after {timeout:g}s"
        wall = time.perf_counter() - started
        rss_text = Path(rss_file).read_text() if os.path.exists(rss_file) else ""
        last = _last_line(rss_text)
        rss = int(last) / 1024 if last.isdigit() else None
        if proc.returncode not in case.ok_codes:
            return wall, rss, _last_line(stderr) or f"exit code {proc.returncode}"
        return wall, rss, None


def run_round(results: list[Result], python: str, round_no: int, repeats: int, timeout: float):
    """Runs every case that has not failed once: round `round_no` of `repeats`.

    Rounds go over all cases in turn (A B C, A B C, ...) rather than repeating one case at a
    time, so that a slow drift of the machine (load, heat, a neighbour) weighs on every case
    alike instead of on whichever cases happened to run during it.
    """
    for result in results:
        case = result.case
        if result.error:
            continue
        if not glob.glob(os.path.join(REPO, case.inputs)):
            result.error = f"no input matches {case.inputs}: run bench/make_data.py"
            continue
        result.loads.append(os.getloadavg()[0])
        wall, rss, error = run_once(case, python, timeout)
        status = f"failed: {error}" if error else "ok"
        rss_text = f"{rss:,.0f} MB" if rss is not None else "? MB"
        print(
            f"  {case.name} run {round_no}/{repeats}: {wall:.2f}s {rss_text} {status} "
            f"(load before: {result.loads[-1]:.2f})",
            flush=True,
        )
        if error:
            result.error = error
            continue
        result.walls.append(wall)
        if rss is not None:
            result.rss_mb.append(rss)


def machine(python: str) -> str:
    """nproc, CPU, memory and the interpreter's package versions, as one Markdown line."""
    probe = (
        "import platform; from importlib.metadata import version as v; "
        'print(f\'Python {platform.python_version()}, apache-beam {v("apache-beam")}, '
        'scikit-learn {v("scikit-learn")}, pyarrow {v("pyarrow")}, '
        'pandas {v("pandas")}, numpy {v("numpy")}\')'
    )
    versions = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    with open("/proc/cpuinfo") as f:
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
            platform.machine(),
        )
    with open("/proc/meminfo") as f:
        mem_gb = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal"))) / 1024**2
    nproc = len(os.sched_getaffinity(0))
    return f"nproc {nproc} ({cpu}), {mem_gb:.0f} GB RAM, {platform.system()}; {versions}"


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def tables(results: list[Result]) -> str:
    """The cases table and the ratios table, in Markdown."""
    lines = [
        "| case | wall s (median) | runs s | rows/s | peak RSS MB | max load before | status |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        runs = ", ".join(f"{w:.2f}" for w in r.walls)
        rate = r.case.rows / r.wall if r.wall else None
        rate_spec = ",.0f" if rate and rate >= 100 else ".2f"
        load = max(r.loads) if r.loads else None
        status = f"failed: {r.error}" if r.error else "ok"
        lines.append(
            f"| {r.case.name} | {_fmt(r.wall, '.2f')} | {runs} | {_fmt(rate, rate_spec)} "
            f"| {_fmt(r.rss, ',.0f')} | {_fmt(load, '.2f')} | {status} |"
        )
    by_name = {r.case.name: r for r in results}
    lines += [
        "",
        "| ratio | value | target | |",
        "|---|---:|---|---|",
    ]
    for ratio in RATIOS:
        value = ratio.value(by_name)
        target = f"{ratio.op} {ratio.bound:g}x" if ratio.op else "-"
        lines.append(
            f"| {ratio.label} | {_fmt(value, '.3f')} | {target} | {ratio.verdict(value)} |"
        )
    return "\n".join(lines)


def report(results: list[Result], command: str, repeats: int, python: str) -> str:
    """The whole of REPORT.md."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commands = "\n".join(
        f"- `{r.case.name}`: {r.case.description}.  \n"
        f"  `{shlex.join([_rel(python), *r.case.argv])}`"
        for r in results
    )
    timer = "`/usr/bin/time -f %M`" if GNU_TIME.exists() else "getrusage(RUSAGE_CHILDREN)"
    analysis_file = BENCH / "ANALYSIS.md"
    analysis = analysis_file.read_text() if analysis_file.exists() else ""
    return f"""# Benchmark report

- Date: {now}
- Command: `{command}`
- Machine: {machine(python)}
- Repeats: {repeats} per case, in rounds (every case once, then every case again, ...). Wall
  time is measured around the whole process (median of the runs); peak RSS (median of the
  runs) is the largest maxrss of any process in the run's tree, from {timer}. "rows/s" is
  rows / median wall time. "max load before" is the highest 1-minute load average seen just
  before the case's runs: on {len(os.sched_getaffinity(0))} cores, a value
  well above 0 means other work was competing and the times are inflated.

{tables(results)}

Ratios compare median wall times (peak RSS for the RSS rows); "n/a" means a case was not run or
failed.

{analysis}
## Cases

Every run writes into a fresh temporary directory (`{OUT}`), deleted afterwards; the working
directory is the repository root.

{commands}
"""


def compiled(python: str) -> None:
    """Compiles the project's packages as pip does when it installs them, so that no timed run
    compiles them from source: a user's first run writes the bytecode and the next ones read
    it, but with PYTHONDONTWRITEBYTECODE set (as on CI machines) every run would pay for it,
    about 0.5 s a night on 2 cores, which the plain loop, one small script, does not."""
    packages = [str(REPO / p) for p in PACKAGES]
    subprocess.run([python, "-m", "compileall", "-q", *packages], check=True, cwd=REPO)


def main() -> None:
    """Picks the cases, runs them, prints the tables and writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 repeat, no 4M-row cases")
    parser.add_argument("--cases", help="comma-separated case names or glob patterns")
    parser.add_argument("--data", type=Path, default=BENCH / "data", help="make_data.py's --out")
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--report", type=Path, default=BENCH / "REPORT.md")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run (default 600)")
    args = parser.parse_args()

    cases = build_cases(args.data.resolve())
    if args.cases:
        patterns = [p.strip() for p in args.cases.split(",") if p.strip()]
        unknown = [p for p in patterns if not any(fnmatch.fnmatch(c.name, p) for c in cases)]
        if unknown:
            parser.error(f"no case matches {unknown}; cases: {', '.join(c.name for c in cases)}")
        cases = [c for c in cases if any(fnmatch.fnmatch(c.name, p) for p in patterns)]
    if args.quick:
        cases = [c for c in cases if not c.large]
    repeats = 1 if args.quick else args.repeats

    for case in cases:
        print(f"{case.name}: {case.description}", flush=True)
    compiled(args.python)
    results = [Result(case) for case in cases]
    for round_no in range(1, repeats + 1):
        print(f"round {round_no}/{repeats}", flush=True)
        run_round(results, args.python, round_no, repeats, args.timeout)

    command = shlex.join([_rel(sys.executable), *sys.argv])
    args.report.write_text(report(results, command, repeats, args.python))
    print(f"\n{tables(results)}\n\nwrote {_rel(args.report)}")


if __name__ == "__main__":
    main()
