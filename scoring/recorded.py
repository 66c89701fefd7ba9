"""A RowSpec written down (the manifest's `scoring` section) and read back, so that the online
service can score exactly as a committed night did (`python -m pipeline.serve --like DIR`).

What the model's fitted structure tells is read from the model again (models.introspect); what
was decided from the night's input or by asking the model (the column types, the features that
may be missing, the float-matrix fast path, the prediction type, the unknown-category rule, the
explain plan) is recorded.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pyarrow as pa

from models.explain import ExplainPlan
from models.introspect import inspect
from scoring.spec import RowSpec

SECTION = "scoring"


def describe(spec: RowSpec, unknown_categories: str) -> dict[str, Any]:
    """The decisions of a RowSpec as a JSON object: readable types, and the exact Arrow
    schemas (base64 IPC) that `restore` reads."""
    facts = spec.facts
    plan = spec.explain
    return {
        "columns": {f.name: str(f.type) for f in spec.columns},
        "key_types": {k: str(spec.key_type(k)) for k in spec.keys},
        "prediction_type": str(facts.prediction_type),
        "missing_ok": sorted(facts.missing_ok) if facts.missing_ok is not None else None,
        "numpy_ok": facts.numpy_ok,
        "unknown_categories": unknown_categories,
        "explain": _plain(dataclasses.asdict(plan)) if plan is not None else None,
        "arrow": {
            "columns": _schema_text(spec.columns),
            "output": _schema_text(spec.output_schema),
        },
    }


def restore(section: dict[str, Any], model: Any, ref: Any, features, keys) -> RowSpec:
    """The RowSpec a night recorded, for this loaded model (the one the night pinned).

    Args:
        section: the manifest's `scoring` section.
        model: the loaded model.
        ref: where it was loaded from (models.loading.ModelRef).
        features: the night's features, in the model's order.
        keys: the night's key columns.

    Raises KeyError or ValueError when the section is not one `describe` wrote.
    """
    columns = _schema(section["arrow"]["columns"])
    output = _schema(section["arrow"]["output"])
    facts = inspect(model)
    missing = section["missing_ok"]
    facts = dataclasses.replace(
        facts,
        prediction_type=output.field("prediction").type,
        missing_ok=frozenset(missing) if missing is not None else None,
        numpy_ok=bool(section["numpy_ok"]),
    )
    if section["unknown_categories"] == "score":
        facts = facts.scoring_unknown_categories()
    plan = section.get("explain")
    explain = None
    if plan is not None:
        explain = ExplainPlan(**{k: _tuples(v) for k, v in plan.items()})
    features, keys = tuple(features), tuple(keys)
    key_types = {k: output.field(k).type for k in keys if k in features}
    return RowSpec(
        features=features,
        keys=keys,
        columns=columns,
        model=ref,
        facts=facts,
        key_types=key_types,
        explain=explain,
    )


def _schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _plain(value: Any) -> Any:
    """A dataclass's fields as JSON values (tuples as lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value  # a NumPy scalar


def _tuples(value: Any) -> Any:
    """JSON lists back as the tuples a frozen plan holds."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
