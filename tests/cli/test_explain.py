"""--explain K (issue 21): each row's K largest feature contributions, as the model's own library
computes them, and every contribution plus the expected value adds up to the raw output."""

from __future__ import annotations

import json
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest

from models.baseline import baseline_from_frame
from models.register import requirements
from tests.conftest import assert_one_line_error, score
from tests.helpers import EXPLAIN_FEATURES as FEATURES
from tests.helpers import EXPLAIN_ROWS as ROWS
from tests.helpers import explain_frame as frame
from tests.helpers import explain_labels as labels


def write(tmp_path, model, df: pd.DataFrame, name: str = "model.joblib", baseline=True):
    path = tmp_path / name
    joblib.dump(model, path)
    if baseline:
        base = baseline_from_frame(df, list(df.columns))
        (tmp_path / (name + ".drift.json")).write_text(json.dumps(base))
    rows = df.copy()
    rows.insert(0, "id", np.arange(len(rows)))
    rows.to_parquet(tmp_path / "in.parquet")
    return path


def run(tmp_path, model_path, k: int | str):
    cli = score(tmp_path / "in.parquet", model_path, tmp_path / "out", "--explain", str(k))
    return cli


def expected_reasons(contrib: np.ndarray, names: list[str], k: int):
    """Top-K by absolute value, largest first, ties in feature order, None past the non-zero."""
    reasons, values = [], []
    for row in contrib:
        order = sorted(range(len(row)), key=lambda j: (-abs(row[j]), j))[:k]
        reasons.append([names[j] if row[j] != 0 else None for j in order])
        values.append([row[j] if row[j] != 0 else np.nan for j in order])
    return reasons, np.asarray(values, dtype=np.float64)


def check(
    cli, contrib: np.ndarray, raw: np.ndarray, k: int, names=FEATURES, float32: bool = False
) -> pd.DataFrame:
    """The run's reasons equal the top-K of `contrib` (the library's own, computed here), and
    with K = every feature, the contributions and the expected value add up to `raw` to 1e-6.

    `float32`: XGBoost computes contributions and margins in float32, so its own contributions
    add up to its own margin to 1e-6 relative to the margin, not absolutely.
    """
    assert cli.code == 0, cli.stderr
    out = cli.predictions().sort_values("id").reset_index(drop=True)
    assert len(out) == len(contrib)
    got_names = out[[f"reason_{i}" for i in range(1, k + 1)]].to_numpy().tolist()
    got_values = out[[f"contribution_{i}" for i in range(1, k + 1)]].to_numpy(dtype=np.float64)
    want_names, want_values = expected_reasons(contrib, names, k)
    got_names = [[None if v is None or v != v else v for v in row] for row in got_names]
    assert got_names == want_names
    np.testing.assert_allclose(got_values, want_values, rtol=1e-9, atol=1e-12)
    assert str(out["contribution_1"].dtype) == "float64"
    explain = cli.manifest["explain"]
    assert explain["k"] == k and explain["units"] and explain["method"]
    if k == len(names):  # local accuracy: every contribution, plus the expected value
        ev = np.asarray(explain["expected_value"], dtype=np.float64)
        if ev.ndim:  # multi-class: the predicted class's expected value
            classes = np.asarray(cli.manifest_classes_index)
            ev = ev[classes]
        total = np.nansum(got_values, axis=1) + ev
        np.testing.assert_allclose(total, raw, rtol=1e-6 if float32 else 0, atol=1e-6)
    top = explain["top_reasons"]
    assert sum(t["rows"] for t in top) == len(out)
    assert top[0]["rows"] == out["reason_1"].value_counts(dropna=False).max()
    return out


def _predicted(margins: np.ndarray) -> np.ndarray:
    return np.argmax(margins, axis=1)


@pytest.mark.parametrize("kind", ["binary", "multi", "regression"])
def test_xgboost(tmp_path, kind):
    import xgboost

    df = frame()
    y = labels(df, kind)
    cls = xgboost.XGBRegressor if kind == "regression" else xgboost.XGBClassifier
    model = cls(n_estimators=8, max_depth=3).fit(df, y)
    k = len(FEATURES)
    cli = run(tmp_path, write(tmp_path, model, df), k)
    contribs = model.get_booster().predict(xgboost.DMatrix(df), pred_contribs=True)
    margin = model.predict(df, output_margin=True).astype(np.float64)
    if kind == "multi":
        chosen = _predicted(margin)
        contribs = contribs[np.arange(len(df)), chosen]
        margin = margin[np.arange(len(df)), chosen]
        cli.manifest_classes_index = chosen
    check(cli, contribs[:, :-1].astype(np.float64), margin, k, float32=True)


def test_xgboost_native_file_top_two(tmp_path):
    import xgboost

    df = frame(1)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgboost.DMatrix(df, labels(df, "binary")),
        8,
    )
    path = tmp_path / "model.json"
    booster.save_model(path)
    write(tmp_path, None, df, name="unused.joblib", baseline=False)
    cli = run(tmp_path, path, 2)
    contribs = booster.predict(xgboost.DMatrix(df), pred_contribs=True)
    check(cli, contribs[:, :-1].astype(np.float64), None, 2)


@pytest.mark.parametrize("kind", ["binary", "multi", "regression"])
def test_lightgbm(tmp_path, kind):
    import lightgbm

    df = frame(2)
    y = labels(df, kind)
    cls = lightgbm.LGBMRegressor if kind == "regression" else lightgbm.LGBMClassifier
    model = cls(n_estimators=8, num_leaves=7, min_child_samples=5, verbose=-1).fit(df, y)
    k = len(FEATURES)
    cli = run(tmp_path, write(tmp_path, model, df), k)
    contribs = np.asarray(model.booster_.predict(df.to_numpy(), pred_contrib=True))
    margin = np.asarray(model.predict(df, raw_score=True), dtype=np.float64)
    if kind == "multi":
        contribs = contribs.reshape(len(df), 3, len(FEATURES) + 1)
        chosen = _predicted(margin)
        contribs = contribs[np.arange(len(df)), chosen]
        margin = margin[np.arange(len(df)), chosen]
        cli.manifest_classes_index = chosen
    check(cli, contribs[:, :-1], margin, k)


def test_lightgbm_native_file(tmp_path):
    import lightgbm

    df = frame(3)
    model = lightgbm.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1)
    model.fit(df, labels(df, "binary"))
    path = tmp_path / "model.txt"
    model.booster_.save_model(path)
    write(tmp_path, None, df, name="unused.joblib", baseline=False)
    cli = run(tmp_path, path, 3)
    contribs = np.asarray(model.booster_.predict(df.to_numpy(), pred_contrib=True))
    check(cli, contribs[:, :-1], None, 3)


def _tree_models():
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    return {
        "rf": (RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0), "binary"),
        "rf_multi": (RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0), "multi"),
        "rf_reg": (RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0), "reg"),
        "et": (ExtraTreesClassifier(n_estimators=5, max_depth=4, random_state=0), "binary"),
        "et_reg": (ExtraTreesRegressor(n_estimators=5, max_depth=4, random_state=0), "reg"),
        "gb": (GradientBoostingClassifier(n_estimators=8, max_depth=2), "binary"),
        "gb_reg": (GradientBoostingRegressor(n_estimators=8, max_depth=2), "reg"),
        "hgb": (HistGradientBoostingClassifier(max_iter=8), "binary"),
        "hgb_multi": (HistGradientBoostingClassifier(max_iter=8), "multi"),
        "hgb_reg": (HistGradientBoostingRegressor(max_iter=8), "reg"),
        "dt": (DecisionTreeClassifier(max_depth=4, random_state=0), "binary"),
        "dt_reg": (DecisionTreeRegressor(max_depth=4, random_state=0), "reg"),
    }


def _raw(model, X) -> np.ndarray:
    """The raw output shap's TreeExplainer explains: the decision function of gradient
    boosting classifiers, the probabilities of other classifiers, the prediction of regressors."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype=np.float64)
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X), dtype=np.float64)
    return np.asarray(model.predict(X), dtype=np.float64)


@pytest.mark.parametrize("name", list(_tree_models()))
def test_sklearn_trees(tmp_path, name):
    import shap

    model, kind = _tree_models()[name]
    df = frame(4)
    model.fit(df, labels(df, "regression" if kind == "reg" else kind))
    k = len(FEATURES)
    cli = run(tmp_path, write(tmp_path, model, df), k)
    X = df.to_numpy()
    explainer = shap.TreeExplainer(model)
    values = np.asarray(explainer.shap_values(X, check_additivity=False))
    raw = _raw(model, X)
    if values.ndim == 3:  # rows x features x classes
        chosen = np.full(len(X), 1) if values.shape[2] == 2 else _predicted(raw)
        values = values[np.arange(len(X)), :, chosen]
        raw = raw[np.arange(len(X)), chosen]
        if values.shape[0] and np.asarray(explainer.expected_value).size > 2:
            cli.manifest_classes_index = chosen
    elif raw.ndim == 2:  # a multi-class decision function and 3-D values come together
        raise AssertionError("unexpected shapes")
    check(cli, values, raw, k)


def test_sklearn_tree_without_shap(tmp_path, monkeypatch):
    from sklearn.ensemble import RandomForestRegressor

    df = frame(5)
    model = RandomForestRegressor(n_estimators=3, max_depth=3).fit(df, labels(df, "reg"))
    path = write(tmp_path, model, df)
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap raises ImportError
    cli = run(tmp_path, path, 2)
    assert_one_line_error(cli, "shap", "beamscore[explain]")
    assert not (tmp_path / "out").exists()


def _linear(name: str):
    from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge

    return {
        "logistic": (LogisticRegression(), "binary"),
        "logistic_multi": (LogisticRegression(), "multi"),
        "linear": (LinearRegression(), "reg"),
        "ridge": (Ridge(alpha=0.5), "reg"),
        "lasso": (Lasso(alpha=0.1), "reg"),  # zero coefficients: fewer than K reasons
    }[name]


@pytest.mark.parametrize("name", ["logistic", "logistic_multi", "linear", "ridge", "lasso"])
def test_linear(tmp_path, name):
    model, kind = _linear(name)
    df = frame(6)
    model.fit(df, labels(df, "regression" if kind == "reg" else kind))
    k = len(FEATURES)
    cli = run(tmp_path, write(tmp_path, model, df), k)
    assert cli.manifest["explain"]["reference"] == "drift_baseline"
    X = df.to_numpy()
    means = X.mean(axis=0)  # what baseline_from_frame recorded
    coef = np.atleast_2d(model.coef_)
    raw = model.decision_function(X) if kind != "reg" else model.predict(X)
    if kind == "multi":
        chosen = _predicted(raw)
        contrib = coef[chosen] * (X - means)
        raw = raw[np.arange(len(X)), chosen]
        cli.manifest_classes_index = chosen
    else:
        contrib = coef[0] * (X - means)
    check(cli, contrib, raw, k)
    if name == "lasso":
        assert cli.predictions()[f"reason_{k}"].isna().all()


def test_linear_without_a_baseline_is_refused_where_there_is_no_sample(tmp_path, capsys):
    """The service from flags has no night to sample: a linear model without a drift baseline
    has no honest reference means there (served --like a night, it takes the night's)."""
    from sklearn.linear_model import LinearRegression

    from pipeline.serve import main

    df = frame(7)
    model = LinearRegression().fit(df, labels(df, "reg"))
    path = write(tmp_path, model, df, baseline=False)
    assert main(["--model", str(path), "--explain", "2", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drift baseline has none" in err and "sample" in err


def test_a_pipeline_without_a_baseline_takes_its_reference_from_the_nights_sample(tmp_path):
    """StandardScaler + OneHotEncoder + LogisticRegression, no drift baseline: the reference
    means are those of the launcher's sample of the night (here every row), named in the
    manifest; reasons name input columns and add up to the decision function to 1e-6."""
    from sklearn.linear_model import LogisticRegression

    df = _mixed(seed=13)
    y = ((df.f0 + (df.city == "paris") - 0.5 * (df.city == "nice")) > 0.3).astype(int)
    model = _pipeline(LogisticRegression()).fit(df, y)
    names = list(df.columns)
    k = len(names)
    cli = run(tmp_path, write(tmp_path, model, df, baseline=False), k)
    assert cli.code == 0, cli.stderr
    explain = cli.manifest["explain"]
    assert explain["reference"] == "night_sample" and explain["reference_rows"] == len(df)
    Z = model[:-1].transform(df)
    Z = Z.toarray() if hasattr(Z, "toarray") else Z
    per_column = model[-1].coef_[0] * (Z - Z.mean(axis=0))
    groups = [0, 1, 2] + [3] * (Z.shape[1] - 3)
    contrib = np.zeros((len(df), len(names)))
    for column, group in enumerate(groups):
        contrib[:, group] += per_column[:, column]
    out = check(cli, contrib, model[-1].decision_function(Z), k, names=names)
    assert set(out[[f"reason_{i}" for i in range(1, k + 1)]].stack().dropna()) <= set(names)
    # --explain 3: the same reference, the top three of those contributions.
    three = score(tmp_path / "in.parquet", tmp_path / "model.joblib", tmp_path / "out3",
                  "--explain", "3")  # fmt: skip
    assert three.manifest["explain"]["reference"] == "night_sample"
    check(three, contrib, model[-1].decision_function(Z), 3, names=names)


def _mixed(seed: int = 8, n: int = ROWS) -> pd.DataFrame:
    df = frame(seed, n)[["f0", "f1", "f2"]]
    rng = np.random.default_rng(seed)
    df["city"] = rng.choice(["paris", "lyon", "nice", "lille"], n)
    return df


def _pipeline(last):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["f0", "f1", "f2"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    return make_pipeline(pre, last)


@pytest.mark.parametrize("last", ["logistic", "forest"])
def test_pipeline_names_input_columns(tmp_path, last):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    df = _mixed()
    y = ((df.f0 + (df.city == "paris") - 0.5 * (df.city == "nice")) > 0.3).astype(int)
    step = LogisticRegression() if last == "logistic" else RandomForestClassifier(5, max_depth=4)
    model = _pipeline(step).fit(df, y)
    names = list(df.columns)
    k = len(names)
    cli = run(tmp_path, write(tmp_path, model, df), k)
    Z = model[:-1].transform(df)
    Z = Z.toarray() if hasattr(Z, "toarray") else Z
    width = Z.shape[1]
    groups = [0, 1, 2] + [3] * (width - 3)
    if last == "logistic":
        base = baseline_from_frame(df, names)
        shares = base["city"]["categories"]
        cats = model[0].named_transformers_["cat"].categories_[0]
        zmean = np.concatenate([Z[:, :3].mean(axis=0), [shares.get(c, 0.0) for c in cats]])
        per_column = step.coef_[0] * (Z - zmean)
        raw = step.decision_function(Z)
    else:
        import shap

        per_column = np.asarray(shap.TreeExplainer(step).shap_values(Z))[:, :, 1]
        raw = step.predict_proba(Z)[:, 1]
    contrib = np.zeros((len(df), len(names)))
    for column, group in enumerate(groups):
        contrib[:, group] += per_column[:, column]
    out = check(cli, contrib, raw, k, names=names)
    seen = set(out[[f"reason_{i}" for i in range(1, k + 1)]].stack().dropna())
    assert seen <= set(names) and "city" in seen


def test_unsupported_model_is_refused(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    df = frame(9)
    model = KNeighborsClassifier(3).fit(df, labels(df, "binary"))
    cli = run(tmp_path, write(tmp_path, model, df), 2)
    assert_one_line_error(cli, "KNeighborsClassifier", "--explain supports")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("k", ["0", str(len(FEATURES) + 1), "two"])
def test_bad_k_is_refused(tmp_path, k):
    from sklearn.linear_model import LinearRegression

    df = frame(10)
    model = LinearRegression().fit(df, labels(df, "reg"))
    cli = run(tmp_path, write(tmp_path, model, df), k)
    assert_one_line_error(cli, "--explain")
    assert not (tmp_path / "out").exists()


def test_only_the_reason_columns_the_run_writes_clash_with_a_key(tmp_path):
    """--explain 2 writes reason_1..2 and contribution_1..2: an input column reason_3 or
    contribution_02 is a key like any other; contribution_2 is refused, naming the keys to keep."""
    from sklearn.linear_model import LinearRegression

    df = frame(12)
    model = LinearRegression().fit(df, labels(df, "reg"))
    path = write(tmp_path, model, df)
    rows = pd.read_parquet(tmp_path / "in.parquet")
    rows["reason_3"], rows["contribution_02"] = "kept", 7
    rows.to_parquet(tmp_path / "in.parquet")
    cli = run(tmp_path, path, 2)
    assert cli.code == 0, cli.stderr
    written = cli.predictions()
    assert set(written.reason_3) == {"kept"} and set(written.contribution_02) == {7}
    assert written.reason_1.notna().all() and "reason_3" in cli.manifest["key_columns"]

    rows["contribution_2"] = 1.0
    rows.to_parquet(tmp_path / "in.parquet")
    cli = score(tmp_path / "in.parquet", path, tmp_path / "out2", "--explain", "2")
    assert_one_line_error(
        cli, "contribution_2", "--explain 2 writes", "--key_columns id,reason_3,contribution_02"
    )
    assert not (tmp_path / "out2").exists()


def test_without_explain_no_reason_columns(tmp_path):
    from sklearn.linear_model import LinearRegression

    df = frame(11)
    model = LinearRegression().fit(df, labels(df, "reg"))
    path = write(tmp_path, model, df)
    cli = score(tmp_path / "in.parquet", path, tmp_path / "out")
    assert cli.code == 0, cli.stderr
    assert not [c for c in cli.predictions().columns if c.startswith(("reason_", "contrib"))]
    assert "explain" not in cli.manifest


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_report_and_mlflow_show_the_top_reasons(tmp_path):
    """The report's reason-codes section and the MLflow run's top_reasons.json table: the
    features most often the top reason, with their share of the rows."""
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    df = frame(13)
    model = LinearRegression().fit(df, labels(df, "reg"))
    path = write(tmp_path, model, df)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment("nightly", artifact_location=str(tmp_path / "artifacts"))
    cli = score(
        tmp_path / "in.parquet",
        path,
        tmp_path / "out",
        "--explain",
        "2",
        "--mlflow_tracking_uri",
        uri,
        "--mlflow_experiment",
        "nightly",
    )
    assert cli.code == 0, cli.stderr
    counts = cli.predictions()["reason_1"].value_counts()
    top = cli.manifest["explain"]["top_reasons"]
    assert {t["feature"]: t["rows"] for t in top} == counts.to_dict()
    assert [t["rows"] for t in top] == sorted(counts, reverse=True)  # most often first
    assert top[0]["share"] == round(counts.iloc[0] / ROWS, 6)
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="reasons" data-k="2" data-method="linear"' in page
    for feature, rows in counts.items():
        assert f'data-feature="{feature}" data-rows="{rows}"' in page
    client = MlflowClient(uri)
    run_id = cli.manifest["mlflow_run_id"]
    local = client.download_artifacts(run_id, "top_reasons.json", str(tmp_path / "dl"))
    table = json.loads(open(local).read())
    assert table["columns"] == ["feature", "rows", "share"]
    assert {row[0]: row[1] for row in table["data"]} == counts.to_dict()


def test_pipeline_remainder_and_column_order(tmp_path):
    """One-hot columns first (one dropped category), the numeric ones scaled as the remainder:
    each column is still summed back to its own input column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = _mixed(14)
    y = ((df.f1 - (df.city == "lyon")) > 0).astype(int)
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(drop="first"), ["city"])], remainder=StandardScaler()
    )
    model = make_pipeline(pre, LogisticRegression()).fit(df, y)
    names = list(df.columns)
    cli = run(tmp_path, write(tmp_path, model, df), len(names))
    Z = model[0].transform(df)
    shares = baseline_from_frame(df, names)["city"]["categories"]
    kept = model[0].named_transformers_["cat"].categories_[0][1:]  # the first is dropped
    zmean = np.concatenate([[shares.get(c, 0.0) for c in kept], Z[:, len(kept) :].mean(axis=0)])
    per_column = model[-1].coef_[0] * (Z - zmean)
    groups = [3] * len(kept) + [0, 1, 2]
    contrib = np.zeros((len(df), len(names)))
    for column, group in enumerate(groups):
        contrib[:, group] += per_column[:, column]
    check(cli, contrib, model.decision_function(df), len(names), names=names)


def test_xgboost_early_stopping_explains_the_trees_it_predicts_with(tmp_path):
    """An XGBClassifier that stopped early predicts with its best iteration's trees: its
    contributions are those of the same trees."""
    import xgboost

    df = frame(15)
    y = labels(df, "binary")
    model = xgboost.XGBClassifier(n_estimators=60, early_stopping_rounds=2, max_depth=3)
    model.fit(df, y, eval_set=[(df[:40], y[:40])], verbose=False)
    assert model.best_iteration < 59  # it did stop early
    k = len(FEATURES)
    cli = run(tmp_path, write(tmp_path, model, df), k)
    trees = (0, model.best_iteration + 1)
    contribs = model.get_booster().predict(
        xgboost.DMatrix(df), pred_contribs=True, iteration_range=trees
    )
    margin = model.predict(df, output_margin=True).astype(np.float64)
    check(cli, contribs[:, :-1].astype(np.float64), margin, k, float32=True)


@pytest.mark.parametrize("name", ["cat.json", "cat.txt"])
def test_boosters_with_a_category_feature_and_missing_values(tmp_path, booster_files, name):
    """XGBoost and LightGBM files with a categorical `color` and NaNs: the contributions are the
    library's own on the rows as the user's code hands them to it (color as a category)."""
    import lightgbm
    import xgboost

    from tests.conftest import FEATURES as FOUR
    from tests.helpers import as_category, colored_rows

    df = colored_rows(150, seed=3)
    df.loc[df.index[::11], "f1"] = np.nan
    df.loc[df.index[5::29], "color"] = None
    df.to_parquet(tmp_path / "in.parquet")
    names = FOUR + ["color"]
    path = booster_files / name
    cli = run(tmp_path, path, len(names))
    rows = as_category(df)
    if name.endswith(".json"):
        booster = xgboost.Booster(model_file=str(path))
        matrix = xgboost.DMatrix(rows, enable_categorical=True)
        contribs = booster.predict(matrix, pred_contribs=True).astype(np.float64)
        raw = booster.predict(matrix, output_margin=True).astype(np.float64)
    else:
        booster = lightgbm.Booster(model_file=str(path))
        contribs = np.asarray(booster.predict(rows, pred_contrib=True))
        raw = booster.predict(rows, raw_score=True)
    out = check(cli, contribs[:, :-1], raw, len(names), names=names, float32=name.endswith("json"))
    assert "color" in set(out["reason_1"])


@pytest.mark.parametrize("flavour", ["xgboost", "sklearn"])
def test_mlflow_flavours(tmp_path, flavour):
    """An MLflow xgboost flavour (the booster's pred_contribs) and an sklearn flavour holding a
    random forest (shap's TreeExplainer), by runs:/ URI."""
    import os

    import mlflow
    import shap
    import xgboost
    from sklearn.ensemble import RandomForestRegressor

    df = frame(16)
    if flavour == "xgboost":
        model = xgboost.XGBClassifier(n_estimators=6, max_depth=3).fit(df, labels(df, "binary"))
    else:
        model = RandomForestRegressor(n_estimators=4, max_depth=3, random_state=0)
        model.fit(df, labels(df, "reg"))
    write(tmp_path, None, df, name="unused.joblib", baseline=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("m", artifact_location=str(tmp_path / "art"))
        with mlflow.start_run(experiment_id=experiment) as active:
            needs = requirements(model, "cloudpickle")  # stated: MLflow would infer them slowly
            if flavour == "xgboost":
                mlflow.xgboost.log_model(model, name="model", pip_requirements=needs)
            else:
                mlflow.sklearn.log_model(
                    model, name="model", serialization_format="cloudpickle", pip_requirements=needs
                )
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    k = len(FEATURES)
    cli = score(
        tmp_path / "in.parquet",
        f"runs:/{active.info.run_id}/model",
        tmp_path / "out",
        "--explain",
        str(k),
        "--mlflow_tracking_uri",
        uri,
    )
    if flavour == "xgboost":
        contribs = model.get_booster().predict(xgboost.DMatrix(df), pred_contribs=True)[:, :-1]
        raw = model.predict(df, output_margin=True)
    else:
        contribs = shap.TreeExplainer(model).shap_values(df.to_numpy(), check_additivity=False)
        raw = model.predict(df)
    check(cli, np.asarray(contribs, np.float64), raw, k, float32=flavour == "xgboost")
