"""The start-up floor: a Beam pipeline of one element on the DirectRunner, default options."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def main() -> None:
    """Runs Create([1]) | Map(identity) to the end."""
    with beam.Pipeline(options=PipelineOptions([])) as p:
        _ = p | beam.Create([1]) | beam.Map(lambda x: x)


if __name__ == "__main__":
    main()
