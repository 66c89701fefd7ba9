"""Each DoFn of the graph on its own, under TestPipeline with assert_that, on one spec
(tests.helpers.make_spec): what it passes on, what it sends to the errors output, and with what
reason and line."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils import shared

from tests.conftest import float_rows
from tests.helpers import make_spec, pipeline_under_test
from transforms.predict import PredictBatches
from transforms.profile import ProfileFn
from transforms.read import ReadUnits
from transforms.spec import ERRORS, PROFILE, STATS, UNITS
from transforms.units import PlanInput
from transforms.validate import ValidateBatches

ROWS = 60


@pytest.fixture
def night(tmp_path, models_dir):
    """A CSV night of ROWS records: line 5 has too few fields, line 9 a value that is not a
    number; a spec that reads it in batches of 16."""
    lines = float_rows(ROWS).to_csv(index=False).splitlines()
    lines[4] = "3,1,2"  # the file's line 5: a read error
    lines[8] = "7,oops,1,2,3"  # line 9: a validate error
    path = tmp_path / "in" / "night.csv"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return make_spec(models_dir / "binary.joblib", path, tmp_path / "out", batch_size=16)


def _read(p, spec):
    units = (p | PlanInput(spec))["units"]
    return units | beam.ParDo(ReadUnits(spec)).with_outputs(ERRORS, UNITS, STATS, main="batches")


def _validated(p, spec):
    return _read(p, spec).batches | beam.ParDo(ValidateBatches(spec)).with_outputs(
        ERRORS, STATS, main="batches"
    )


def test_read_units_yields_record_batches_and_rejects_a_record_with_its_line(night):
    with pipeline_under_test() as p:
        read = _read(p, night)
        assert_that(
            read.batches | beam.Map(lambda c: c.batch.num_rows) | beam.CombineGlobally(sum),
            equal_to([ROWS - 1]),
            label="rows",
        )
        assert_that(
            read.batches | beam.Map(lambda c: c.batch.num_rows <= 16),
            lambda flags: flags and all(flags),
            label="batch size",
        )
        assert_that(
            read[ERRORS] | beam.Map(lambda e: (e["stage"], e["error"].split(":")[0], e["line"])),
            equal_to([("read", "wrong number of fields", 5)]),
            label="errors",
        )


def test_validate_batches_passes_typed_rows_and_rejects_a_value(night):
    with pipeline_under_test() as p:
        valid = _validated(p, night)
        assert_that(
            valid.batches | beam.Map(lambda c: c.batch.num_rows) | beam.CombineGlobally(sum),
            equal_to([ROWS - 2]),
            label="rows",
        )
        assert_that(
            valid.batches | beam.Map(lambda c: str(c.batch.schema.field("f0").type)),
            lambda types: set(types) == {"double"},
            label="types",
        )
        assert_that(
            valid[ERRORS] | beam.Map(lambda e: (e["stage"], e["record"]["f0"])),
            equal_to([("validate", "oops")]),
            label="errors",
        )


def test_predict_batches_scores_every_valid_row_once(night):
    profiler = ProfileFn(None, night.facts.classes, night.facts.proba_columns[-1])
    with pipeline_under_test() as p:
        scored = _validated(p, night).batches | beam.ParDo(
            PredictBatches(night, shared.Shared(), profiler)
        ).with_outputs(ERRORS, PROFILE, STATS, main="predictions")
        ids = scored.predictions | beam.FlatMap(lambda t: t.column("id").to_pylist())
        assert_that(ids, equal_to([i for i in range(ROWS) if i not in (3, 7)]), label="ids")
        assert_that(
            scored.predictions | beam.Map(lambda t: t.column_names[:3]),
            lambda names: names and all(n == ["id", "prediction", "proba_0"] for n in names),
            label="columns",
        )
        assert_that(scored[ERRORS], equal_to([]), label="errors")
