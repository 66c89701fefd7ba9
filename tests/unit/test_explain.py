"""Reason codes as plain functions: the top-K order, and what remote workers install for them."""

from __future__ import annotations

import numpy as np

from models.explain import top_k
from tests.helpers import explain_frame as frame
from tests.helpers import explain_labels as labels


def test_top_k_order_ties_and_zeros():
    contrib = np.array(
        [
            [0.5, -0.5, 0.1, 0.0],  # a tie: the model's feature order decides
            [0.0, 0.0, -2.0, 0.0],  # one feature contributes: the rest are null
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    index, values = top_k(contrib, 3)
    assert index.tolist() == [[0, 1, 2], [2, -1, -1], [-1, -1, -1]]
    np.testing.assert_array_equal(values, [[0.5, -0.5, 0.1], [-2.0, np.nan, np.nan], [np.nan] * 3])


def test_dataflow_workers_install_shap_for_a_tree_model(tmp_path):
    """Remote workers install no extras: --explain on a scikit-learn tree model has shap
    installed through the requirements file, pinned to the running version."""
    import types

    import shap
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
    from sklearn.ensemble import RandomForestRegressor

    from models.explain import ExplainPlan
    from pipeline.runners import named

    df = frame(12)
    model = RandomForestRegressor(n_estimators=2, max_depth=2).fit(df, labels(df, "reg"))
    plan = ExplainPlan(2, "shap_tree", "prediction", 0.0)
    decided = types.SimpleNamespace(model=model, spec=types.SimpleNamespace(explain=plan))
    options = PipelineOptions([])
    named("DataflowRunner").worker_installs(options, decided)
    path = options.view_as(SetupOptions).requirements_file
    assert open(path).read().split() == [f"shap=={shap.__version__}"]
