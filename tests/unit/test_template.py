"""The Flex Template's parameters are exactly the CLI's flags, with help text and regexes."""

from __future__ import annotations

import argparse
import ast
import json
import re

from pipeline.options import ScoringOptions
from tests.conftest import ROOT


def cli_flags() -> set[str]:
    parser = argparse.ArgumentParser()
    ScoringOptions._add_argparse_args(parser)
    return {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}


def test_every_flag_is_a_template_parameter_and_back():
    metadata = json.loads((ROOT / "templates" / "metadata.json").read_text())
    params = {p["name"]: p for p in metadata["parameters"]}
    assert set(params) == cli_flags()
    for p in params.values():
        assert p["helpText"] and p["label"]
        for rx in p["regexes"]:
            re.compile(rx)


def test_template_regexes_accept_real_values():
    params = {
        p["name"]: p
        for p in json.loads((ROOT / "templates" / "metadata.json").read_text())["parameters"]
    }
    good = {
        "input": "gs://b/in/{run_date}/*.parquet",
        "model": "models:/churn@champion",
        "output": "gs://b/scores/{run_date}",
        "max_error_rate": "0.01",
        "run_date": "2026-11-24",
        "column_types": "zip:string,age:float64",
    }
    for name, value in good.items():
        assert any(re.fullmatch(rx, value) for rx in params[name]["regexes"]), name
    assert not any(re.fullmatch(rx, "2") for rx in params["max_error_rate"]["regexes"])


def test_airflow_example_documents_every_variable_it_reads():
    """The DAG (run for real by scripts/test_airflow.sh) names in its docstring the Variables a
    deployment sets, exactly those it reads."""
    source = (ROOT / "examples" / "airflow_dag.py").read_text()
    read = set(re.findall(r"var\.value\.(?:get\(')?(beamscore_\w+)", source))
    documented = set(re.findall(r"\bbeamscore_\w+", ast.get_docstring(ast.parse(source))))
    assert read == documented
    assert {"beamscore_model", "beamscore_mlflow_tracking_uri", "beamscore_project"} <= read


def test_airflow_requirements_are_the_versions_tested():
    tested = (ROOT / "tests_airflow" / "constraints.txt").read_text().splitlines()
    pins = [
        line
        for line in (ROOT / "examples" / "requirements-airflow.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[a-z-]+==[0-9.]+", pin) for pin in pins), pins
    assert set(pins) <= set(tested)
