"""No silent wrong result: what can be known before scoring is refused at launch (exit 2, one
line, nothing written), exit codes mean what they say, and the run never reads, drops or
alters a row behind the user's back (issue 9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import custom_models
from tests.conftest import (
    FEATURES,
    ROOT,
    assert_one_line_error,
    float_rows,
    run_cli,
    write_input,
)
from tests.helpers import fitted, module_process

pytestmark = pytest.mark.slow


def args(inp, model, out, *more) -> list:
    return ["--input", inp, "--model", model, "--output", out, *more]


# --- the command line -------------------------------------------------------------------


def test_unquoted_glob_and_repeated_flags_are_refused(tmp_path, models_dir):
    files = [write_input(float_rows(10), tmp_path / "in" / f"{c}.parquet") for c in "abc"]
    model = models_dir / "binary.joblib"
    # What the shell hands over for an unquoted in/*.parquet: three words.
    cli = run_cli("--input", *files, "--model", model, "--output", tmp_path / "o")
    assert_one_line_error(cli, "unexpected word", "b.parquet", "quote")
    assert not (tmp_path / "o").exists()
    cli = run_cli(*args(files[0], model, tmp_path / "o"), "--input", files[1])
    assert_one_line_error(cli, "--input is given more than once")
    cli = run_cli(*args(files[0], model, tmp_path / "o"), "--runner=DirectRunner", "--runner", "x")
    assert_one_line_error(cli, "--runner is given more than once")
    cli = run_cli(*args(files[0], model, tmp_path / "o"), "-input", "x")
    assert_one_line_error(cli, "unknown flag -input")
    # A flag's bad value is one line too, not argparse's usage of every flag Beam has.
    for more, says in (
        (["--input"], "--input: expected one argument"),
        (["--direct_num_workers", "abc"], "invalid int value: 'abc'"),
        (["--direct_running_mode", "bogus"], "invalid choice: 'bogus'"),
    ):
        cli = run_cli(*args(files[0], model, tmp_path / "o")[2:], *more)
        assert_one_line_error(cli, says)
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert not (tmp_path / "o").exists()


def test_misspelt_placeholders_and_names_given_twice_are_refused(tmp_path, models_dir):
    inp = write_input(float_rows(10), tmp_path / "in.parquet")
    model = models_dir / "binary.joblib"
    for out, more, says in (
        ("o/{rundate}", [], "unknown placeholder {rundate}"),
        ("o", ["--key_columns", "id,id"], "--key_columns names id more than once"),
        ("o", ["--features", "f0,f1,f0"], "--features names f0 more than once"),
        ("o", ["--column_types", "id:string,id:int64"], "--column_types names id more than once"),
    ):
        assert_one_line_error(run_cli(*args(inp, model, tmp_path / out, *more)), says)
    cli = run_cli(*args(tmp_path, model, tmp_path / "o"))
    assert_one_line_error(cli, "is a directory", f"'{tmp_path}/*.parquet'")
    assert not list(tmp_path.glob("o*"))  # no directory named {rundate}
    cli = run_cli(*args(inp, model, tmp_path / "o" / "{run_date}", "--run_date", "2026-01-02"))
    assert cli.code == 0, cli.stderr
    assert (tmp_path / "o" / "2026-01-02" / "manifest.json").exists()


@pytest.mark.subprocess
def test_help_lists_every_flag_with_its_default():
    from pipeline.options import FLAGS

    for flag in ("--help", "-h"):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.run", flag], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0, result.stderr
        text = result.stdout
        for f in FLAGS:
            assert f"--{f.name}" in text
            if f.default is not None:
                assert f"(default: {f.default})" in text
        assert "Beam pipeline options" in text and "exit codes" in text
        assert "Traceback" not in result.stderr


# --- inputs -------------------------------------------------------------------------------


def test_output_inside_the_input_pattern_is_never_read(tmp_path, models_dir):
    for i in range(2):
        write_input(float_rows(1000, start_id=i * 1000), tmp_path / "d" / f"day/p{i}.parquet")
    run_args = args(
        tmp_path / "d" / "**" / "*.parquet", models_dir / "binary.joblib", tmp_path / "d" / "scores"
    )
    for _ in range(3):
        cli = run_cli(*run_args)
        assert cli.code == 0, cli.stderr
        assert cli.manifest["counts"]["rows_read"] == 2000
        assert cli.predictions().id.is_unique
        assert all("/scores/" not in i["path"] for i in cli.manifest["inputs"])
    only_output = run_cli(
        *args(
            tmp_path / "d" / "scores" / "**",
            models_dir / "binary.joblib",
            tmp_path / "d" / "scores",
        )
    )
    assert_one_line_error(only_output, "lies under --output", "never reads its own output")
    # Nightly outputs beside the input: one night's predictions are not the next night's input.
    nightly = args(
        tmp_path / "d" / "**" / "*.parquet",
        models_dir / "binary.joblib",
        tmp_path / "d" / "nightly" / "{run_date}",
    )
    for day in ("2026-11-24", "2026-11-25"):
        cli = run_cli(*nightly, "--run_date", day)
        assert cli.code == 0, cli.stderr
        manifest = json.loads((tmp_path / "d" / "nightly" / day / "manifest.json").read_text())
        assert manifest["counts"]["rows_read"] == 2000
        assert {Path(i["path"]).name for i in manifest["inputs"]} == {
            "p0.parquet",
            "p1.parquet",
        }


def test_a_file_matched_under_two_names_is_read_once(tmp_path, models_dir):
    """latest.parquet, a symlink beside its target, and two links to one file elsewhere: each
    file is read once (the launcher and the workers both match the pattern)."""
    folder = tmp_path / "in"
    write_input(float_rows(30), folder / "2026-11-24.parquet")
    (folder / "latest.parquet").symlink_to("2026-11-24.parquet")
    write_input(float_rows(20, start_id=30), tmp_path / "elsewhere" / "x.parquet")
    (folder / "x-link.parquet").symlink_to(tmp_path / "elsewhere" / "x.parquet")
    (folder / "y-link.parquet").symlink_to(tmp_path / "elsewhere" / "x.parquet")
    cli = run_cli(*args(folder / "*.parquet", models_dir / "binary.joblib", tmp_path / "o"))
    assert cli.code == 0, cli.stderr
    counts = cli.manifest["counts"]
    assert (counts["rows_read"], counts["rows_predicted"], counts["rows_failed"]) == (50, 50, 0)
    assert {Path(i["path"]).name: i["rows_read"] for i in cli.manifest["inputs"]} == {
        "2026-11-24.parquet": 30,
        "x-link.parquet": 20,
    }
    preds = cli.predictions()
    assert len(preds) == 50 and preds.id.is_unique


def test_a_later_file_lacking_a_key_column_is_rejected_not_scored_with_null_keys(
    tmp_path, models_dir
):
    write_input(float_rows(100), tmp_path / "in" / "a.csv")
    write_input(
        float_rows(50, start_id=100).rename(columns={"id": "ID"}), tmp_path / "in" / "b.csv"
    )
    cli = run_cli(*args(tmp_path / "in" / "*.csv", models_dir / "binary.joblib", tmp_path / "o"))
    assert cli.code == 1, cli.stderr
    preds = cli.predictions()
    assert len(preds) == 100 and preds.id.notna().all()
    (error,) = cli.errors()
    assert error["source"].endswith("b.csv") and error["rows"] == 50
    assert "id (the file has 'ID'" in error["error"]
    files = {Path(i["path"]).name: i for i in cli.manifest["inputs"]}
    assert files["b.csv"]["rows_failed"] == 50 and files["a.csv"]["rows_failed"] == 0


def test_a_name_in_another_unicode_form_is_pointed_out(tmp_path):
    """größe written NFD (o + combining diaeresis) looks like the model's NFC größe: the error
    says the file has it in another Unicode form, at launch (first file) and on the workers."""
    import unicodedata

    from sklearn.linear_model import LinearRegression

    nfc, nfd = (unicodedata.normalize(form, "größe") for form in ("NFC", "NFD"))
    assert nfc != nfd
    train = float_rows(200, seed=1).rename(columns={"f0": nfc})
    features = [nfc, "f1", "f2", "f3"]
    joblib.dump(LinearRegression().fit(train[features], train.f1), tmp_path / "m.joblib")
    says = ("the same text in another Unicode form", "is NFD", "is NFC")
    write_input(float_rows(30).rename(columns={"f0": nfc}), tmp_path / "in" / "a.csv")
    write_input(float_rows(20, start_id=30).rename(columns={"f0": nfd}), tmp_path / "in" / "b.csv")
    cli = run_cli(*args(tmp_path / "in" / "*.csv", tmp_path / "m.joblib", tmp_path / "o"))
    assert cli.code == 1, cli.stderr
    (error,) = cli.errors()
    assert error["source"].endswith("b.csv") and error["rows"] == 20
    assert all(word in error["error"] for word in says), error["error"]
    assert len(cli.predictions()) == 30
    write_input(float_rows(20).rename(columns={"f0": nfd}), tmp_path / "first" / "a.parquet")
    cli = run_cli(*args(tmp_path / "first" / "*.parquet", tmp_path / "m.joblib", tmp_path / "o2"))
    assert_one_line_error(cli, "lacks model feature column(s)", *says)
    assert not (tmp_path / "o2").exists()


def test_a_key_column_named_like_an_output_column_is_refused_not_dropped(tmp_path, models_dir):
    """An input column named like a column the output writes itself cannot be copied as a key:
    by default (every non-feature column is a key) and when given, exit 2 says how to leave it
    out; it is never dropped silently. A feature of that name is no key and is scored."""
    df = float_rows(20)
    df["prediction"], df["run_id"], df["region"] = "upstream", "r-1", "eu"
    inp = write_input(df, tmp_path / "in.parquet")
    model = models_dir / "binary.joblib"
    cli = run_cli(*args(inp, model, tmp_path / "o"))
    assert_one_line_error(cli, "prediction, run_id would be key columns", "--key_columns id,region")
    cli = run_cli(*args(inp, model, tmp_path / "o", "--key_columns", "id,run_id"))
    assert_one_line_error(cli, "--key_columns names run_id", "--key_columns id")
    assert not (tmp_path / "o").exists()
    cli = run_cli(*args(inp, model, tmp_path / "o", "--key_columns", "id,region"))
    assert cli.code == 0, cli.stderr
    assert cli.manifest["key_columns"] == ["id", "region"]
    assert set(cli.predictions().run_id) == {cli.manifest["run_id"]}
    # A feature named like an output column is read as the feature, and is no key.
    from sklearn.linear_model import LogisticRegression

    renamed = {"f0": "prediction", "f1": "proba_1"}
    train = float_rows(300, seed=1).rename(columns=renamed)
    features = ["prediction", "proba_1", "f2", "f3"]
    fitted_model = LogisticRegression().fit(train[features], (train.prediction > 0).astype(int))
    joblib.dump(fitted_model, tmp_path / "m.joblib")
    rows = write_input(float_rows(20).rename(columns=renamed), tmp_path / "feat.csv")
    cli = run_cli(*args(rows, tmp_path / "m.joblib", tmp_path / "o2"))
    assert cli.code == 0, cli.stderr
    preds = cli.predictions().sort_values("id")
    expected = fitted_model.predict_proba(pd.read_csv(rows)[features])[:, 1]
    np.testing.assert_allclose(preds.proba_1, expected)
    assert cli.manifest["key_columns"] == ["id"]


@pytest.mark.parametrize("dirty_top", [3, 20, 150])
def test_missing_values_follow_the_model_not_the_sample(tmp_path, models_dir, dirty_top):
    """HistGradientBoosting takes NaN: empty cells are scored however many unparseable rows
    sit at the top of the first file (the probe asks the model with rows that are valid)."""
    df = float_rows(400)
    lines = df.to_csv(index=False).splitlines()
    for i in range(1, dirty_top + 1):
        lines[i] = f"{i - 1},x,y,z,w"  # unparseable features
    lines[300] = "299,0.1,,0.3,"  # empty cells: missing values
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    cli = run_cli(
        *args(tmp_path / "in.csv", models_dir / "hgb.joblib", tmp_path / "o"),
        "--max_error_rate",
        "0.5",
    )
    assert cli.code == 0, cli.stderr
    preds = cli.predictions()
    assert 299 in set(preds.id)
    assert {e["stage"] for e in cli.errors()} == {"validate"}
    assert len(cli.errors()) == dirty_top


# --- features -----------------------------------------------------------------------------


def test_features_are_matched_by_name_whatever_their_order(tmp_path, models_dir):
    df = float_rows(300)
    write_input(df, tmp_path / "in.parquet")
    model = joblib.load(models_dir / "regressor.joblib")
    reordered = run_cli(
        *args(tmp_path / "in.parquet", models_dir / "regressor.joblib", tmp_path / "o"),
        "--features",
        ",".join(reversed(FEATURES)),
    )
    assert reordered.code == 0, reordered.stderr
    preds = reordered.predictions().set_index("id").loc[df.id]
    np.testing.assert_allclose(preds.prediction, model.predict(df[FEATURES]), rtol=0, atol=1e-12)
    fewer = run_cli(
        *args(tmp_path / "in.parquet", models_dir / "regressor.joblib", tmp_path / "o2"),
        "--features",
        "f0,f1",
    )
    assert_one_line_error(fewer, "--features leaves out", "f2, f3")


def test_text_in_a_numeric_feature_is_a_validate_error_not_a_predict_error(tmp_path, models_dir):
    """A pandas-3 text column (large_string) in a numeric feature: values that are not numbers
    are rejected one by one at validate, the rest scored (no model call per row)."""
    df = float_rows(2000)
    df["f1"] = df.f1.map(lambda v: f"{v:.6f}").astype("str")
    df.loc[df.index % 3 == 0, "f1"] = "n.a."
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(2, "f1", table.column("f1").cast(pa.large_string()))
    pq.write_table(table, tmp_path / "in.parquet")
    cli = run_cli(
        *args(tmp_path / "in.parquet", models_dir / "binary.joblib", tmp_path / "o"),
        "--max_error_rate",
        "0.5",
    )
    assert cli.code == 0, cli.stderr
    c = cli.manifest["counts"]
    assert c["rows_failed_by_stage"] == {"read": 0, "validate": 667, "predict": 0}
    assert c["rows_predicted"] == 1333


@pytest.mark.parametrize(
    "values, words",
    [(["1,234.50", "2,000.00"], ["f0", "1,234.50", "thousands"]), (["yes", "no"], ["f0", "yes"])],
)
def test_a_numeric_feature_holding_no_number_is_refused_at_launch(
    tmp_path, models_dir, values, words
):
    df = float_rows(50)
    df["f0"] = [values[i % 2] for i in range(50)]
    write_input(df, tmp_path / "in.csv")
    cli = run_cli(*args(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o"))
    assert_one_line_error(cli, *words)
    assert not (tmp_path / "o").exists()


def test_large_integers_are_scored_as_scikit_learn_scores_them(tmp_path):
    from sklearn.linear_model import LinearRegression

    n = 200
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": (1_700_000_000_000_000_000 + rng.integers(0, 10**12, n)).astype(np.int64),
            "big": (np.uint64(2**60) + rng.integers(0, 2**40, n).astype(np.uint64)),
        }
    )
    model = LinearRegression().fit(df[["ts", "big"]], rng.normal(size=n))
    joblib.dump(model, tmp_path / "m.joblib")
    write_input(df, tmp_path / "in.parquet")
    cli = run_cli(*args(tmp_path / "in.parquet", tmp_path / "m.joblib", tmp_path / "o"))
    assert cli.code == 0, cli.stderr
    preds = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_array_equal(preds.prediction.to_numpy(), model.predict(df[["ts", "big"]]))


# --- models -------------------------------------------------------------------------------


def test_models_that_cannot_be_scored_are_refused_at_launch(tmp_path):
    from sklearn.linear_model import LinearRegression

    df = float_rows(100)
    write_input(df, tmp_path / "in.parquet")
    multi = LinearRegression().fit(df[FEATURES], np.column_stack([df.f0, df.f1]))
    joblib.dump(multi, tmp_path / "multi.joblib")
    cli = run_cli(*args(tmp_path / "in.parquet", tmp_path / "multi.joblib", tmp_path / "o"))
    assert_one_line_error(cli, "one prediction per row", "multi-output")
    joblib.dump(fitted(custom_models.AlwaysRaises()), tmp_path / "broken.joblib")
    cli = run_cli(*args(tmp_path / "in.parquet", tmp_path / "broken.joblib", tmp_path / "o"))
    assert_one_line_error(cli, "cannot score", "broken for every row")
    assert not (tmp_path / "o").exists()


def test_text_predictions_of_a_model_without_classes(tmp_path):
    df = float_rows(100)
    write_input(df, tmp_path / "in.parquet")
    joblib.dump(fitted(custom_models.Labeller()), tmp_path / "labels.joblib")
    cli = run_cli(*args(tmp_path / "in.parquet", tmp_path / "labels.joblib", tmp_path / "o"))
    assert cli.code == 0, cli.stderr
    preds = cli.predictions().set_index("id").loc[df.id]
    assert preds.prediction.tolist() == np.where(df.f0 > 0, "high", "low").tolist()


def test_a_batch_the_model_fails_on_almost_whole_tries_each_row_alone_once(tmp_path):
    """Each row the model fails on is tried alone before it is rejected, at about one call per
    row where failures are dense (halving down to the rows would cost two)."""
    calls = tmp_path / "calls.txt"
    joblib.dump(fitted(custom_models.Sentinel(str(calls))), tmp_path / "m.joblib")
    df = float_rows(20_000)
    df.loc[100:, "f0"] = 999  # the first rows (the launch's sample) are fine, the rest fail
    write_input(df, tmp_path / "in.parquet")
    calls.unlink(missing_ok=True)
    cli = run_cli(
        *args(tmp_path / "in.parquet", tmp_path / "m.joblib", tmp_path / "o"),
        "--max_error_rate",
        "1",
    )
    assert cli.code == 0, cli.stderr
    c = cli.manifest["counts"]
    assert c["rows_predicted"] == 100 and c["rows_failed_by_stage"]["predict"] == 19_900
    predict_calls = custom_models.calls(str(calls))
    assert predict_calls.count(1) >= 19_900  # every rejected row, alone
    assert len(predict_calls) < 1.25 * 20_000, len(predict_calls)  # halving would be 40,000
    errors = cli.errors()
    assert len(errors) == 19_900
    assert all(
        e["error"] == "ValueError: f0 = 999 is a sentinel this model refuses" for e in errors
    )
    assert {e["row_index"] for e in errors} == set(range(100, 20_000))


def test_a_model_saved_with_another_scikit_learn_is_refused(tmp_path, models_dir):
    import sklearn

    data = (models_dir / "regressor.joblib").read_bytes()
    running = sklearn.__version__.encode()
    other = b"1.4." + b"9" * (len(running) - 4)  # same length: the pickle stays valid
    assert running in data
    (tmp_path / "old.joblib").write_bytes(data.replace(running, other))
    write_input(float_rows(50), tmp_path / "in.parquet")
    cli = run_cli(*args(tmp_path / "in.parquet", tmp_path / "old.joblib", tmp_path / "o"))
    assert_one_line_error(cli, other.decode(), sklearn.__version__, "--allow_version_mismatch")
    cli = run_cli(
        *args(tmp_path / "in.parquet", tmp_path / "old.joblib", tmp_path / "o"),
        "--allow_version_mismatch",
    )
    assert cli.code == 0, cli.stderr
    versions = cli.manifest["model"]["library_versions"]["scikit-learn"]
    assert versions == {"saved": other.decode(), "running": sklearn.__version__}


# --- the output directory -----------------------------------------------------------------


def test_output_that_is_a_file_or_lies_under_one_or_cannot_be_written(tmp_path, models_dir):
    inp = write_input(float_rows(20), tmp_path / "in.parquet")
    model = models_dir / "binary.joblib"
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(run_cli(*args(inp, model, tmp_path / "afile")), "is a file")
    assert_one_line_error(
        run_cli(*args(inp, model, tmp_path / "afile" / "sub")), "lies under", "afile"
    )
    assert_one_line_error(run_cli(*args(inp, model, "/proc/beamscore/out")), "cannot be written")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_duplicated_column_name_is_refused(tmp_path, models_dir):
    (tmp_path / "in.csv").write_text("id,f0,f1,f2,f3,f1\n1,0.1,0.2,0.3,0.4,0.5\n")
    cli = run_cli(*args(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o"))
    assert_one_line_error(cli, "'f1'", "more than once")
    table = pa.table([pa.array([1]), pa.array([0.1]), pa.array([0.2])], names=["id", "f0", "f0"])
    pq.write_table(table, tmp_path / "in.parquet")
    cli = run_cli(*args(tmp_path / "in.parquet", models_dir / "binary.joblib", tmp_path / "o"))
    assert_one_line_error(cli, "'f0'", "more than once")


def _wait_for_scoring(proc: subprocess.Popen, out: Path, timeout: float = 60) -> None:
    """Until the run holds the lock and its workers are scoring."""
    deadline = time.monotonic() + timeout
    while not list((out / "_staging").glob("*/predictions")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.subprocess
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_exits_128_plus_signal_and_leaves_the_output(tmp_path, signum, code):
    joblib.dump(fitted(custom_models.Slow(0.3)), tmp_path / "slow.joblib")
    write_input(float_rows(3000), tmp_path / "in.parquet")
    run_args = [*args(tmp_path / "in.parquet", tmp_path / "slow.joblib", tmp_path / "o")]
    first = run_cli(*run_args, "--batch_size", "1000")
    assert first.code == 0, first.stderr
    before = (tmp_path / "o" / "manifest.json").read_text()
    proc = module_process("pipeline.run", *run_args, "--batch_size", "10")
    _wait_for_scoring(proc, tmp_path / "o")
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "previous output is intact" in stderr
    assert (tmp_path / "o" / "manifest.json").read_text() == before
    assert not (tmp_path / "o" / "_lock").exists()
    assert not list((tmp_path / "o").glob("_staging/*"))


@pytest.mark.subprocess
def test_a_run_that_lost_its_lock_commits_nothing(tmp_path):
    joblib.dump(fitted(custom_models.Slow(0.2)), tmp_path / "slow.joblib")
    write_input(float_rows(600), tmp_path / "in.parquet")
    out = tmp_path / "o"
    proc = module_process(
        "pipeline.run",
        *args(tmp_path / "in.parquet", tmp_path / "slow.joblib", out),
        "--batch_size",
        "20",
    )
    _wait_for_scoring(proc, out)
    other = {
        "run_id": "other",
        "host": "elsewhere",
        "pid": 1,
        "heartbeat_at": "2999-01-01T00:00:00+00:00",
    }
    (out / "_lock").write_text(json.dumps(other))  # another run took the lock over
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "lost the lock" in stderr and "nothing was committed" in stderr
    assert not (out / "manifest.json").exists()
    assert json.loads((out / "_lock").read_text())["run_id"] == "other"  # not deleted


# --- services -----------------------------------------------------------------------------


def test_unreachable_cloud_storage_is_exit_3(tmp_path, models_dir):
    env = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}  # nothing listens there
    start = time.monotonic()
    cli = run_cli(
        *args("gs://bucket/in/*.parquet", models_dir / "binary.joblib", tmp_path / "o"), env=env
    )
    assert cli.code == 3, cli.stderr
    assert "unreachable" in cli.stderr and "Traceback" not in cli.stderr
    assert time.monotonic() - start < 60
    write_input(float_rows(10), tmp_path / "in.parquet")
    cli = run_cli(
        *args(tmp_path / "in.parquet", "gs://bucket/models/m.joblib", tmp_path / "o"), env=env
    )
    assert cli.code == 3, cli.stderr
    assert "--model" in cli.stderr and "Traceback" not in cli.stderr
    assert os.environ.get("STORAGE_EMULATOR_HOST") != env["STORAGE_EMULATOR_HOST"]
