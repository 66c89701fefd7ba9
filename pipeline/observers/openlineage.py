"""OpenLineage: START from the launcher, COMPLETE from the commit stage, FAIL or ABORT from
whoever sees the run end (pipeline.lineage), as an observer."""

from __future__ import annotations

from pipeline.observers import Finished, Observer, Started


class LineageEvents(Observer):
    """Sends the run's events to `--openlineage_url` (or OPENLINEAGE_URL)."""

    def __init__(self, launch, lineage):
        self.launch = launch
        self.lineage = lineage

    @classmethod
    def for_launch(cls, launch) -> LineageEvents | None:
        from pipeline.commit import lineage_for

        lineage = lineage_for(launch)
        return None if lineage is None else cls(launch, lineage)

    def __getstate__(self) -> dict:  # the launcher's Launch holds the loaded model
        import dataclasses

        return {**self.__dict__, "launch": dataclasses.replace(self.launch, model=None)}

    def started(self, run: Started) -> None:
        from pipeline.commit import lineage_inputs, lineage_outputs

        self.lineage.start(lineage_inputs(run.launch), lineage_outputs(run.launch))

    def finished(self, night: Finished) -> dict:
        from pipeline.commit import lineage_done

        before = len(self.lineage.not_sent)  # what the launcher did not send, it reports itself
        self.lineage.complete(*lineage_done(night.launch, night.manifest), night.manifest["status"])
        return {"lineage_not_sent": self.lineage.not_sent[before:]}

    def failed(self, message: str, stopped: bool) -> None:
        from pipeline.commit import lineage_inputs

        inputs = lineage_inputs(self.launch)
        if stopped:
            self.lineage.abort(inputs)
        else:
            self.lineage.fail(message, inputs)

    @property
    def not_sent(self) -> list[str]:
        return self.lineage.not_sent
