"""The online service over HTTP: a real uvicorn on 127.0.0.1, httpx as the client."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest

from models import demo
from tests.conftest import FEATURES, float_rows, run_cli
from tests.custom_models import Slow
from tests.service.conftest import running

pytestmark = pytest.mark.service


def _records(df: pd.DataFrame) -> list[dict]:
    """A frame's rows as JSON objects, every float to its last digit."""
    return [
        {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
        for row in df.to_dict(orient="records")
    ]


def test_a_pipeline_with_text_categories_answers_as_the_model_does(demo_service, models_dir):
    """Every row's probabilities and label are the model's own on the same rows; the key is
    echoed; the lineage names the model."""
    df = demo.make_rows(300, seed=11).drop(columns="churned")
    res = demo_service.predict(_records(df))
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["errors"] == []
    model = joblib.load(models_dir / "categorical.joblib")
    X = df[model.feature_names_in_]
    proba = model.predict_proba(X)
    labels = model.predict(X)
    rows = body["predictions"]
    assert [r["customer_id"] for r in rows] == df.customer_id.tolist()
    assert [r["prediction"] for r in rows] == labels.tolist()
    assert np.array_equal([[r["proba_no"], r["proba_yes"]] for r in rows], proba)
    first = rows[0]
    assert list(first)[:4] == ["customer_id", "prediction", "proba_no", "proba_yes"]
    assert first["model_uri"] == str(models_dir / "categorical.joblib")
    assert first["model_version"] == body["model"]["version"] == body["model"]["sha256"][:12]
    assert first["run_id"].startswith("serve-") and first["scored_at"].endswith("Z")
    assert first["run_date"] == first["scored_at"][:10]


@pytest.mark.parametrize(
    ("name", "method"), [("regressor.joblib", "predict"), ("multiclass.pkl", "predict_proba")]
)
def test_a_regressor_and_a_multiclass_model_answer_as_the_model_does(models_dir, name, method):
    df = float_rows(200, seed=5)
    model = joblib.load(models_dir / name)
    with running("--model", models_dir / name) as service:
        body = service.predict(_records(df)).json()
    rows = body["predictions"]
    assert [r["id"] for r in rows] == df.id.tolist()
    if method == "predict":
        assert [r["prediction"] for r in rows] == model.predict(df[FEATURES]).tolist()
        assert not any(k.startswith("proba_") for k in rows[0])
    else:
        proba = model.predict_proba(df[FEATURES])
        names = [f"proba_{c}" for c in model.classes_]
        assert np.array_equal([[r[n] for n in names] for r in rows], proba)
        assert [r["prediction"] for r in rows] == model.predict(df[FEATURES]).tolist()


def test_rejected_rows_are_null_with_the_batch_jobs_reasons(demo_service):
    rows = _records(demo.make_rows(4, seed=1).drop(columns="churned"))
    rows[1]["tenure_months"] = "twelve"
    rows[2]["monthly_spend"] = float("inf")
    rows[3]["support_calls"] = None
    body = demo_service.client.post(
        "/predict",
        content=json.dumps({"instances": rows}),
        headers={"content-type": "application/json"},
    ).json()
    assert body["predictions"][0] is not None
    assert body["predictions"][1:] == [None, None, None]
    assert body["errors"] == [
        {"index": 1, "stage": "validate", "error": "tenure_months: 'twelve' is not a number"},
        {"index": 2, "stage": "validate", "error": "monthly_spend: inf is not a finite number"},
        {
            "index": 3,
            "stage": "validate",
            "error": "support_calls: missing value (None) and the model does not accept missing "
            "values",
        },
    ]


def test_keys_are_echoed_verbatim_and_a_key_named_like_an_output_column_is_refused(demo_service):
    row = _records(demo.make_rows(1, seed=2).drop(columns="customer_id"))[0]
    big = 2**64 + 1
    res = demo_service.predict([{**row, "id": big, "note": {"a": [1, 2]}, "flag": True}])
    out = res.json()["predictions"][0]
    assert out["id"] == big and out["note"] == {"a": [1, 2]} and out["flag"] is True
    assert f'"id":{big}' in res.text  # exact in the JSON text too, not a float
    res = demo_service.predict([{**row, "prediction": 1}])
    assert res.status_code == 400
    assert "'prediction'" in res.json()["error"]


def test_served_like_a_night_keys_are_typed_and_other_fields_echoed_as_sent(tmp_path):
    model, inputs = demo.write_demo(str(tmp_path / "demo"), rows=20, files=1)
    night = tmp_path / "night"
    assert run_cli("--input", inputs, "--model", model, "--output", night).code == 0
    row = _records(demo.make_rows(1, seed=2))[0]
    with running("--like", night) as service:
        res = service.predict([{**row, "customer_id": "17", "note": {"a": [1]}}])
        assert res.status_code == 200, res.text
        out = res.json()["predictions"][0]
        assert out["customer_id"] == 17  # the night's key, typed as the night typed it
        assert out["note"] == {"a": [1]}  # not a column of the night: echoed as sent
        res = service.predict([{**row, "proba_yes": 1}])
        assert res.status_code == 400 and "'proba_yes'" in res.json()["error"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"", {}, 400, "no body"),
        (b"\xff\xfe{}", {}, 400, "not UTF-8"),
        (b"[1, 2]", {}, 400, "not an object"),
        (b'{"rows": []}', {}, 400, 'no "instances"'),
        (b'{"instances": {"a": 1}}', {}, 400, "not a list"),
        (b'{"instances": [{"a": 1}, 7]}', {}, 400, '"instances"[1]'),
        (b'{"instances": []}', {"content-type": "text/csv"}, 415, "application/json"),
        (b'{"instances": [' + b"{}," * 10 + b"{}]}", {}, 413, "--max_rows"),
        (b'{"instances": [{"x": "' + b"y" * 3000 + b'"}]}', {}, 413, "--max_body_mb"),
    ],
)
def test_a_malformed_request_is_a_4xx_with_a_one_line_json_body(
    small_limits_service, content, headers, status, words
):
    res = small_limits_service.client.post("/predict", content=content, headers=headers)
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == "application/json"
    assert "\n" not in res.text and "Traceback" not in res.text
    assert words in res.json()["error"]


@pytest.fixture(scope="module")
def small_limits_service(models_dir):
    with running(
        "--model", models_dir / "regressor.joblib", "--max_rows", "10", "--max_body_mb", "0.002"
    ) as service:
        yield service


def test_unknown_routes_and_methods_are_404_and_405_in_json(small_limits_service):
    c = small_limits_service.client
    res = c.get("/nowhere")
    assert res.status_code == 404 and "no route /nowhere" in res.json()["error"]
    res = c.get("/predict")
    assert res.status_code == 405 and "GET" in res.json()["error"]


def test_health_readiness_and_the_model(demo_service, models_dir):
    c = demo_service.client
    assert c.get("/healthz").json() == {"status": "alive"}
    assert c.get("/readyz").status_code == 200
    assert c.get("/ping").status_code == 200  # MLflow's and SageMaker's health route
    described = c.get("/model").json()
    assert described["uri"] == str(models_dir / "categorical.joblib")
    assert [f["name"] for f in described["features"]] == demo.NUMERIC + demo.CATEGORICAL
    assert {f["name"]: f["type"] for f in described["features"]}["plan"] == "string"
    assert described["classes"] == ["no", "yes"] and described["explain"] is None
    assert described["columns"][:3] == ["prediction", "proba_no", "proba_yes"]


def test_metrics_count_the_requests_and_rows(models_dir):
    rows = _records(float_rows(5))
    with running("--model", models_dir / "regressor.joblib") as service:
        for _ in range(3):
            assert service.predict(rows).status_code == 200
        bad = [dict(rows[0], f1="x"), rows[1]]
        assert service.predict(bad).status_code == 200
        assert service.client.post("/predict", content=b"nope").status_code == 400
        assert service.metric("beamscore_requests_total", route="/predict", status="200") == 4
        assert service.metric("beamscore_requests_total", route="/predict", status="400") == 1
        assert service.metric("beamscore_rows_scored_total") == 16
        assert service.metric("beamscore_rows_rejected_total", stage="validate") == 1
        assert service.metric("beamscore_request_seconds_count", route="/predict") == 5
        text = service.client.get("/metrics").text
        assert 'beamscore_model_info{sha256="' in text


def test_mlflow_scoring_formats_on_invocations(models_dir):
    df = float_rows(3)
    model = joblib.load(models_dir / "regressor.joblib")
    expected = model.predict(df[FEATURES]).tolist()
    split = {"columns": FEATURES, "data": df[FEATURES].to_numpy().tolist()}
    bodies = [
        {"dataframe_split": split},
        {"dataframe_records": _records(df[FEATURES])},
        {"instances": _records(df[FEATURES])},
        {"inputs": {f: df[f].tolist() for f in FEATURES}},
    ]
    with running("--model", models_dir / "regressor.joblib") as service:
        for body in bodies:
            res = service.client.post("/invocations", json=body)
            assert res.status_code == 200, (body, res.text)
            assert res.json() == {"predictions": expected}
        bad = {"dataframe_records": [dict(_records(df[FEATURES])[0], f2="n/a")]}
        res = service.client.post("/invocations", json=bad)
        assert res.status_code == 400
        assert res.json() == {
            "error_code": "BAD_REQUEST",
            "message": "1 of 1 row(s) rejected: row 0 (validate): f2: 'n/a' is not a number",
        }
        res = service.client.post("/invocations", json={"dataframe_split": {"data": [[1]]}})
        assert res.status_code == 400 and res.json()["error_code"] == "BAD_REQUEST"


def test_scoring_runs_off_the_event_loop_and_concurrent_requests_go_together(tmp_path):
    """While a slow model scores, health checks answer at once; requests that queued meanwhile
    are scored in one call, and each gets its own rows' answer."""
    df = float_rows(2)
    joblib.dump(Slow(seconds=1.0).fit(df[FEATURES]), tmp_path / "slow.joblib")
    with running("--model", tmp_path / "slow.joblib") as service:
        requests = [_records(float_rows(2, seed=s)) for s in range(6)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            first = pool.submit(service.predict, requests[0])
            time.sleep(0.3)  # the first request is being scored
            start = time.monotonic()
            assert service.client.get("/healthz").status_code == 200
            waited = time.monotonic() - start
            rest = [pool.submit(service.predict, r) for r in requests[1:]]
            answers = [first.result()] + [f.result() for f in rest]
        assert waited < 0.5, waited  # not behind the second the model sleeps
        for rows, res in zip(requests, answers):
            expected = [round(sum(r[f] for f in FEATURES), 9) for r in rows]
            assert [round(p["prediction"], 9) for p in res.json()["predictions"]] == expected
            assert [p["id"] for p in res.json()["predictions"]] == [r["id"] for r in rows]
        assert service.state.batcher.batches < len(requests)


def test_a_model_it_cannot_load_is_exit_2_before_it_listens(tmp_path, capsys):
    from pipeline.serve import main

    (tmp_path / "broken.joblib").write_bytes(b"not a pickle")
    port = str(_port())
    assert main(["--model", str(tmp_path / "broken.joblib"), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert main(["--model", str(tmp_path / "missing.joblib"), "--port", port]) == 2
    assert main(["--model", str(tmp_path / "broken.joblib"), "--explian", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown flag --explian" in err


def _port() -> int:
    from tests.service.conftest import free_port

    return free_port()
