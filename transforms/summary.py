"""The run summary: what the commit stage reads once the rest of the pipeline is done, merged
in one combine.

Every step hands in small parts as (kind, payload) pairs, once per bundle: the files a writer
wrote, a step's per-file counts and run-wide totals, the scoring step's profile, the errors
writer's brief. One CombineGlobally merges them into one JSON file in the staging directory.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.errors import MergeCounts, SummarizeErrors
from transforms.profile import ProfileFn

SUMMARY_FILE = "RUN.json"


class RunSummary(beam.CombineFn):
    """Merges the parts: `files` lists, `counts` tallies, `profile` and `errors` accumulators."""

    def __init__(self, profiler: ProfileFn):
        self._profiler = profiler
        self._counts = MergeCounts()
        self._errors = SummarizeErrors()

    def create_accumulator(self) -> dict[str, Any]:
        return {
            "files": [],
            "totals": {},
            "counts": self._counts.create_accumulator(),
            "profile": self._profiler.create_accumulator(),
            "errors": self._errors.create_accumulator(),
        }

    def add_input(self, acc: dict[str, Any], part: tuple[str, Any]) -> dict[str, Any]:
        kind, payload = part
        if kind == "files":
            acc["files"].extend(payload)
        elif kind == "counts":
            acc["counts"] = self._counts.add_input(acc["counts"], payload)
        elif kind == "totals":
            _add(acc["totals"], payload)
        elif kind == "profile":
            acc["profile"] = self._profiler.merge_accumulators([acc["profile"], payload])
        elif kind == "errors":
            acc["errors"] = self._errors.merge_accumulators([acc["errors"], payload])
        else:
            raise ValueError(f"unknown part of the run summary: {kind}")
        return acc

    def merge_accumulators(self, accumulators) -> dict[str, Any]:
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["files"].extend(acc["files"])
            _add(merged["totals"], acc["totals"])
            merged["counts"] = self._counts.add_input(merged["counts"], acc["counts"])
            merged["profile"] = self._profiler.merge_accumulators(
                [merged["profile"], acc["profile"]]
            )
            merged["errors"] = self._errors.merge_accumulators([merged["errors"], acc["errors"]])
        return merged

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return {
            "files": sorted(acc["files"]),
            "totals": dict(sorted(acc["totals"].items())),
            "counts": self._counts.extract_output(acc["counts"]),
            "profile": self._profiler.extract_output(acc["profile"]),
            "errors": self._errors.extract_output(acc["errors"]),
        }


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for name, n in more.items():
        into[name] = into.get(name, 0) + n
