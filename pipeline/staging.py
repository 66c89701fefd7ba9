"""A run's staging area and its journaled commit.

Layout under DIR:
    manifest.json        the committed run's record (written last)
    report.html          the same run, as a page a person reads
    predictions/, errors/  the committed run's files
    _lock                held by the run writing into DIR (pipeline.lock)
    _staging/<run_id>/   a run's files until commit; `COMMIT` inside marks it ready to move

A run writes only into its staging directory. The commit first writes the `COMMIT` journal
(the list of final files), then replaces the old files, then `manifest.json`. A run killed before
the journal leaves the previous output untouched; a run killed during the commit is rolled forward
by the next run before it starts (`recover`). SIGINT and SIGTERM wait for the commit to end
(pipeline.signals); only a kill (SIGKILL, a lost machine) can leave a commit half done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from apache_beam.io.filesystems import FileSystems

from pipeline import output
from pipeline.output import (
    COMMIT,
    MANIFEST,
    OUTPUT_DIRS,
    QUALITY,
    REPORT,
    STAGING,
    is_remote,
    list_files,
    read_json,
)

_LOG = logging.getLogger(__name__)

# Called with the Staging once a commit's journal is written, before any file moves: the one
# moment a kill leaves a commit half done (the tests' kill hooks register here; see
# tests/hooks/sitecustomize.py).
AFTER_JOURNAL: list[Callable[[Staging], None]] = []


class Staging:
    """One run's staging area under DIR and its journaled commit (see the module's docstring)."""

    def __init__(self, path: str, run_id: str):
        self.path = path.rstrip("/")
        self.run_id = run_id
        self.dir = self.join(STAGING, run_id)
        self.journaled = False  # the commit's journal is written: DIR is this run's to finish
        self.committed = False  # the commit is done

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.path, *parts)

    def recover(self) -> None:
        """Finishes a commit a killed run left half done; drops the staging of aborted runs."""
        for run_dir in sorted({self._staging_run(f) for f in list_files(self.join(STAGING))}):
            journal = read_json(FileSystems.join(run_dir, COMMIT))
            if journal is not None:
                _LOG.warning(
                    "finishing the commit of run %s, interrupted earlier", journal["run_id"]
                )
                self._roll_forward(run_dir, journal)
            else:
                _LOG.info("removing the staging of an unfinished run: %s", run_dir)
                self._delete_tree(run_dir)

    def discard(self) -> None:
        """Drops this run's staging, unless its commit journal is written (by this process or
        by the job's commit stage): then the commit stopped half-way, and the staging is what
        the next run needs to finish it."""
        if self.state() == "none":
            self._delete_tree(self.dir)

    def state(self) -> str:
        """What DIR holds of this run, whoever committed it: `committed` (its manifest is
        DIR's), `half` (its journal is written, the commit not finished), `none`."""
        if self.committed:
            return "committed"
        if self.journaled or FileSystems.exists(FileSystems.join(self.dir, COMMIT)):
            return "half"
        if (read_json(self.join(MANIFEST)) or {}).get("run_id") == self.run_id:
            return "committed"
        return "none"

    def known_state(self) -> str:
        """state(), or "unknown" when DIR cannot be read: what a run that is failing already,
        or a stop signal's handler, asks, where the storage's error would hide the news."""
        try:
            return self.state()
        except Exception:  # noqa: BLE001 - storage gone too: the caller's own error is the news
            return "unknown"

    def delete(self) -> None:
        """Drops this run's staging, whatever it holds (its commit is done)."""
        self._delete_tree(self.dir)

    def journal(self) -> dict | None:
        """This run's commit journal, if its commit was begun and not finished."""
        return read_json(FileSystems.join(self.dir, COMMIT))

    def finish(self, journal: dict) -> None:
        """Finishes this run's own commit from its journal (a retried or rerun commit stage)."""
        self.journaled = True
        self._roll_forward(self.dir, journal)
        self.committed = True

    def staged_files(self, summary: dict) -> list[str]:
        """The files the run's successful bundles wrote (as its summary names them), relative to
        DIR (predictions/...): a retried bundle's leftovers in the staging directory are never
        committed."""
        prefix = self.dir + "/"
        return sorted(p.removeprefix(prefix) for p in summary["files"])

    def read(self, name: str) -> dict | None:
        """A JSON file the pipeline wrote into the staging directory, or None."""
        return read_json(FileSystems.join(self.dir, name))

    def commit(self, manifest: dict, files: list[str]) -> None:
        """Makes the staged files (relative to DIR) and the manifest the directory's output,
        replacing the old ones: the journal first, then the moves, the manifest last."""
        journal = {"run_id": self.run_id, "files": files, "manifest": manifest}
        output.write_json(FileSystems.join(self.dir, COMMIT), journal)
        self.journaled = True
        for hook in AFTER_JOURNAL:
            hook(self)
        self._roll_forward(self.dir, journal)
        self.committed = True

    def _roll_forward(self, run_dir: str, journal: dict) -> None:
        keep = {self.join(f) for f in journal["files"]}
        old = [f for d in OUTPUT_DIRS for f in list_files(self.join(d)) if f not in keep]
        for name in (REPORT, QUALITY):  # the previous run's page and quality must not outlive it
            if self.join(name) not in keep and FileSystems.exists(self.join(name)):
                old.append(self.join(name))
        if old:
            FileSystems.delete(old)
        pending = [f for f in journal["files"] if FileSystems.exists(FileSystems.join(run_dir, f))]
        output.move(
            [FileSystems.join(run_dir, f) for f in pending], [self.join(f) for f in pending]
        )
        output.write_json(self.join(MANIFEST), journal["manifest"])
        self._delete_tree(run_dir)

    def _staging_run(self, path: str) -> str:
        rest = path.removeprefix(self.join(STAGING) + "/")
        return self.join(STAGING, rest.split("/")[0])

    def _delete_tree(self, directory: str) -> None:
        if not is_remote(directory):
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
            staging_root = self.join(STAGING)
            if os.path.isdir(staging_root) and not os.listdir(staging_root):
                os.rmdir(staging_root)
            return
        files = list_files(directory)
        if files:
            FileSystems.delete(files)
