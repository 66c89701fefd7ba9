"""Registers your own fitted model in MLflow so that `--model models:/NAME@ALIAS` scores it.

    python -m models.register --model my_model.joblib --sample 'data/2026-11-24/*.parquet' \\
        --name churn --alias champion --mlflow_tracking_uri sqlite:///mlflow.db

The model: a scikit-learn estimator or Pipeline, an XGBoost or LightGBM booster or scikit-learn
wrapper (a joblib/pickle file, an XGBoost .json/.ubj or a LightGBM .txt file; or the object, from
Python with `register`). The sample: rows of the input the nightly run reads (the first file the
pattern matches, or a DataFrame). From them the model is logged with

- its MLflow flavour: sklearn (skops format, with the skops trusted types the model needs, found
  in the model itself), xgboost (UBJSON) or lightgbm;
- a signature inferred from the sample typed as the pipeline hands it to the model: the model's
  features in its order, categorical features as their categories' type, numbers as double;
- the drift baseline of the sample (`metadata.drift_baseline`);
- a check first that the model scores the sample as the pipeline will hand it over, so a model
  that cannot is refused here rather than at the first nightly run;

then registered as a new version of NAME with ALIAS pointing at it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any

import numpy as np

from models import boosters, mlflow_models
from models.baseline import baseline_from_frame
from models.errors import ModelError, one_line
from models.introspect import ModelFacts, inspect

_LOG = logging.getLogger(__name__)
SAMPLE_ROWS = 10_000


class RegisterError(Exception):
    """What the user must fix before the model can be registered (one line)."""


def register(
    model: Any,
    sample,
    name: str,
    alias: str = "champion",
    *,
    features: list[str] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    serialization_format: str = "skops",
) -> tuple[str, str]:
    """Logs a fitted model to MLflow, registers it as a new version of `name` and points `alias`
    at it.

    Args:
        model: a fitted scikit-learn estimator or Pipeline, XGBoost Booster or XGBModel,
            LightGBM Booster or LGBMModel.
        sample: a pandas DataFrame of input rows (other columns are ignored).
        name: the registered model's name.
        alias: the alias to point at the new version.
        features: the feature columns in training order, only for a model that does not name
            them (trained on a matrix).
        tracking_uri: the MLflow tracking and registry server (None: MLFLOW_TRACKING_URI).
        experiment: the experiment to log the model's run in (None: the server's default).
        serialization_format: for scikit-learn models, "skops" (default, MLflow 3's safe
            format) or "cloudpickle" (for models holding code skops cannot store).

    Returns:
        The URI to score with (models:/<name>@<alias>) and the new version number.
    """
    scored = boosters.wrap(model)
    facts = inspect(scored)
    features = _features(facts, features)
    X = as_scored(sample, features, facts)
    try:
        with warnings.catch_warnings():
            # scikit-learn wrappers of boosters warn that the matrix has no feature names
            warnings.simplefilter("ignore")
            predictions = np.asarray(scored.predict(X))
    except Exception as e:  # noqa: BLE001 - whatever the model raises is for the user to see
        raise RegisterError(
            "the model cannot score the sample as beamscore will hand it over (numbers as "
            f"float64, categories as their values): {one_line(e, with_type=True)}"
        ) from e
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(X, predictions)
    metadata = {"drift_baseline": baseline_from_frame(X, features)}
    library = boosters.library_of(model)
    with mlflow_models._pointed_at(tracking_uri):
        experiment_id = _experiment_id(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}"):
            common = {
                "name": "model",
                "signature": signature,
                "registered_model_name": name,
                "metadata": metadata,
            }
            # Stated, not inferred: MLflow would load the model in a subprocess to find them.
            common["pip_requirements"] = requirements(model, serialization_format)
            if library == "xgboost":
                import mlflow.xgboost

                info = mlflow.xgboost.log_model(model, model_format="ubj", **common)
            elif library == "lightgbm":
                import mlflow.lightgbm

                info = mlflow.lightgbm.log_model(model, **common)
            else:
                import mlflow.sklearn

                info = mlflow.sklearn.log_model(
                    model,
                    serialization_format=serialization_format,
                    skops_trusted_types=(
                        trusted_types(model) if serialization_format == "skops" else None
                    ),
                    **common,
                )
        version = str(info.registered_model_version)
        mlflow_models.client(tracking_uri).set_registered_model_alias(name, alias, version)
    return f"models:/{name}@{alias}", version


def requirements(model: Any, serialization_format: str = "skops") -> list[str]:
    """The packages the logged model needs to load, pinned to the running versions: its library,
    scikit-learn for an estimator or a booster's scikit-learn wrapper, and the serializer of a
    scikit-learn model."""
    needed = set(boosters.required_extras(model))
    if hasattr(model, "get_params"):  # a scikit-learn estimator, or a booster's wrapper
        needed.add("scikit-learn")
        if boosters.library_of(model) != "xgboost":  # MLflow stores XGBoost's wrapper as UBJSON
            needed.add(serialization_format if serialization_format == "cloudpickle" else "skops")
    return boosters.pins(needed)


def trusted_types(model: Any) -> list[str]:
    """The types skops does not trust by default that this model's skops file holds (scikit-learn
    internals such as HistGradientBoosting's TreePredictor, or your own classes): what MLflow
    needs as `skops_trusted_types` to save and load it."""
    import skops.io

    try:
        return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    except Exception as e:  # noqa: BLE001 - skops cannot store some objects (lambdas, ...)
        raise RegisterError(
            f"skops cannot store this model ({one_line(e, with_type=True)}); register it with "
            "--serialization cloudpickle"
        ) from e


def as_scored(sample, features: list[str], facts: ModelFacts):
    """The sample's feature columns as the pipeline hands them to the model: a categorical
    feature as its categories' values (text for text categories), a numeric one as float64,
    any other column as text."""
    import pandas as pd

    missing = [f for f in features if f not in sample.columns]
    if missing:
        raise RegisterError(
            f"the sample lacks the model's feature column(s) {', '.join(missing)} (it has "
            f"{', '.join(map(str, sample.columns))})"
        )
    out = {}
    for name in features:
        column = sample[name]
        categories = facts.categorical.get(name)
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(column.dtype.categories.dtype)
        numeric = column.dtype.kind in "biuf" or (
            facts.numeric is not None and name in facts.numeric
        )
        if categories is not None and str(categories.type) != "string":
            out[name] = pd.to_numeric(column, errors="coerce").astype("Int64")
        elif categories is None and numeric:
            out[name] = pd.to_numeric(column, errors="coerce").astype(np.float64)
        else:
            out[name] = (
                column.astype(object)
                .where(column.notna(), None)
                .map(lambda v: v if v is None else str(v))
            )
    return pd.DataFrame(out, index=sample.index)


def read_sample(pattern: str, rows: int = SAMPLE_ROWS):
    """The first `rows` rows of the first file matching `pattern` (Parquet, CSV or JSON Lines,
    local or gs://), as a pandas DataFrame."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from transforms.sources import format_of

    matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not matched:
        raise RegisterError(f"no sample file matches {pattern}")
    path = matched[0]
    fmt = format_of(path)
    with FileSystems.open(path) as f:
        if fmt == "parquet":
            table = pq.read_table(f)
        elif fmt == "csv":
            table = pacsv.read_csv(f)
        elif fmt == "jsonl":
            table = pajson.read_json(f)
        else:
            raise RegisterError(f"cannot tell the format of {path} (.parquet, .csv or .jsonl)")
    return table.slice(0, rows).to_pandas()


def load_file(path: str) -> Any:
    """The fitted object in a model file: a pickle's object, or the native Booster."""
    from models import loading

    model, _ = loading.load(loading.resolve(path))
    return model.estimator if isinstance(model, boosters.BoosterModel) else model


def _features(facts: ModelFacts, given: list[str] | None) -> list[str]:
    if facts.features:
        if given and list(given) != list(facts.features):
            raise RegisterError(
                f"the model names its features ({', '.join(facts.features)}); leave out --features"
            )
        return list(facts.features)
    if not given:
        raise RegisterError(
            "the model does not name its features (trained on a matrix): give them in training "
            "order with --features a,b,..."
        )
    if facts.n_features is not None and len(given) != facts.n_features:
        raise RegisterError(
            f"--features names {len(given)} column(s) but the model takes {facts.n_features}"
        )
    return list(given)


def _experiment_id(name: str | None) -> str | None:
    if not name:
        return None
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    return found.experiment_id if found else mlflow.create_experiment(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.register", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model",
        required=True,
        help="the fitted model: a .joblib/.pkl file, an XGBoost .json/.ubj or a LightGBM .txt file",
    )
    parser.add_argument(
        "--sample",
        required=True,
        help="input rows like the nightly run reads (Parquet, CSV or JSON Lines; a pattern takes "
        "its first file)",
    )
    parser.add_argument("--name", required=True, help="the registered model's name")
    parser.add_argument("--alias", default="champion", help="alias for the new version")
    parser.add_argument("--features", help="a,b,...: only for a model that does not name them")
    parser.add_argument("--mlflow_tracking_uri", help="default: MLFLOW_TRACKING_URI")
    parser.add_argument("--experiment", help="experiment of the logging run (default: Default)")
    parser.add_argument("--sample_rows", type=int, default=SAMPLE_ROWS, help="rows of the sample")
    parser.add_argument(
        "--serialization",
        choices=["skops", "cloudpickle"],
        default="skops",
        help="scikit-learn models only (default skops)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not (args.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        # Not MLflow's fallback (a database file wherever this runs): the nightly run must
        # name the same server, so name it here.
        print(
            "error: say where to register: --mlflow_tracking_uri or MLFLOW_TRACKING_URI "
            "(e.g. sqlite:///$PWD/mlflow.db)",
            file=sys.stderr,
        )
        return 2
    try:
        uri, version = register(
            load_file(args.model),
            read_sample(args.sample, args.sample_rows),
            args.name,
            args.alias,
            features=args.features.split(",") if args.features else None,
            tracking_uri=args.mlflow_tracking_uri,
            experiment=args.experiment,
            serialization_format=args.serialization,
        )
    except (RegisterError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"registered={uri}\nversion={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
