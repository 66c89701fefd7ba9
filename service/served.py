"""The model the service scores with, decided once before it listens: from the model flags as
the batch job decides (scoring.decide), or exactly as a committed night did (--like DIR).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import uuid
from typing import Any

import pyarrow as pa

from models.errors import ModelError
from pipeline.errors import ConfigError, refusals
from pipeline.manifest import PRODUCER
from pipeline.output import MANIFEST, read_json
from scoring import decide, recorded
from scoring.rows import instances_table
from scoring.scorer import Scorer
from scoring.spec import Lineage, RowSpec
from service.flags import ServeConfig

_LOG = logging.getLogger("service")


@dataclasses.dataclass
class Served:
    """A loaded model and how it scores a row.

    Attributes:
        spec: how every row is scored.
        scorer: the scoring core over that spec.
        model: the loaded model and its lineage.
        unknown_categories: the unknown-category rule in force.
        like: the committed night this service scores as (None: decided from the model).
        run_id: this service process's id, written as every row's run_id.
        loaded_s: how long loading and warming took.
    """

    spec: RowSpec
    scorer: Scorer
    model: decide.Model
    unknown_categories: str
    like: str | None
    run_id: str
    loaded_s: float = 0.0

    @property
    def typed_keys(self) -> bool:
        """Whether keys are typed and written as a night wrote them (--like), rather than
        echoed verbatim."""
        return self.like is not None

    def lineage(self, now: datetime.datetime | None = None) -> Lineage:
        """The lineage values of rows scored now: the run date is today (UTC)."""
        today = (now or datetime.datetime.now(datetime.UTC)).date().isoformat()
        ref = self.spec.model
        return Lineage(ref.uri, ref.version, self.run_id, today)

    def describe(self) -> dict[str, Any]:
        """GET /model: what scores the rows, and how."""
        spec = self.spec
        ref = spec.model
        facts = spec.facts
        return {
            "uri": ref.uri,
            "version": ref.version,
            "sha256": ref.sha256,
            "run_id": self.run_id,
            "like": self.like,
            "features": [
                {"name": f, "type": str(spec.columns.field(f).type)} for f in spec.features
            ],
            "keys": [{"name": k, "type": str(spec.key_type(k))} for k in spec.keys],
            "classes": list(facts.classes) if facts.classes else None,
            "prediction_type": str(facts.prediction_type),
            "columns": spec.output_schema.names,
            "explain": spec.explain.manifest() if spec.explain is not None else None,
            "unknown_categories": self.unknown_categories,
            "accepts_missing": sorted(f for f in spec.features if facts.accepts_missing(f)),
            "library_versions": self.model.versions,
        }


def new_run_id() -> str:
    """The service process's run id: when it started, and 8 random hex digits."""
    return f"serve-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def load(config: ServeConfig) -> Served:
    """Loads and warms the model; raises ConfigError (exit 2) or RunFailed (exit 3)."""
    start = time.monotonic()
    with refusals():
        if config.like:
            served = _like(config)
        else:
            served = _from_flags(config)
    warm(served)
    served.loaded_s = time.monotonic() - start
    return served


def _from_flags(config: ServeConfig) -> Served:
    model = decide.load_model(
        config.model,
        config.model_sha256,
        config.tracking_uri,
        None,
        config.allow_version_mismatch,
    )
    features = decide.choose_features(model, config.features)
    unknown = sorted(set(config.overrides) - set(features))
    if unknown:
        raise ConfigError(
            f"--column_types names columns that are not features: {', '.join(unknown)}"
        )
    spec = decide.row_spec(
        model,
        features,
        (),
        overrides=config.overrides,
        unknown_categories=config.unknown_categories,
        explain=config.explain,
        baseline=decide.drift_baseline(model.ref, features),
    )
    return Served(
        spec, Scorer(spec, model.model), model, config.unknown_categories, None, new_run_id()
    )


def _like(config: ServeConfig) -> Served:
    """The night's decisions, read back from its manifest; its model pinned by SHA-256."""
    path = f"{config.like}/{MANIFEST}"
    try:
        manifest = read_json(path)
    except Exception as e:  # noqa: BLE001 - unreadable storage: say which file
        raise ConfigError(f"--like {config.like}: cannot read {path}: {e}") from e
    if not manifest or manifest.get("producer") != PRODUCER:
        raise ConfigError(
            f"--like {config.like}: no manifest.json of a beamscore night there (give the "
            "output directory of a committed night)"
        )
    section = manifest.get(recorded.SECTION)
    if not section:
        raise ConfigError(
            f"--like {config.like}: its manifest has no '{recorded.SECTION}' section (written by "
            "an older beamscore): score that night again with this version, then serve --like"
        )
    pinned = manifest["model"]
    try:
        model = decide.load_model(
            pinned["uri"],
            pinned["sha256"],
            config.tracking_uri,
            None,
            config.allow_version_mismatch,
        )
    except ModelError as e:
        raise ConfigError(f"--like {config.like}: the night's model: {e}") from e
    try:
        spec = recorded.restore(
            section, model.model, model.ref, manifest["features"], manifest["key_columns"]
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(
            f"--like {config.like}: its manifest's '{recorded.SECTION}' section cannot be read: "
            f"{e!r}"
        ) from e
    rule = section["unknown_categories"]
    return Served(spec, Scorer(spec, model.model), model, rule, config.like, new_run_id())


def warm(served: Served) -> None:
    """Scores one row of typical values, so that the first request pays no first-call costs
    (imports inside the model's libraries, caches, lazy allocations)."""
    spec = served.spec
    frame = decide.probe_frame(spec.features, spec.columns, spec.facts, None)
    rows = frame.iloc[:1].to_dict("records")
    wanted = tuple(dict.fromkeys(spec.keys + spec.features))
    for row in rows:
        for k in spec.keys:
            row.setdefault(k, None)
    table = instances_table(rows, wanted)
    batch = pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in table.columns], names=table.column_names
    )
    outcome = served.scorer.score(batch, served.lineage())
    if outcome.rejected:
        _LOG.info(
            "warm-up row rejected (%s): %s", outcome.rejected[0].stage, outcome.rejected[0].error
        )
