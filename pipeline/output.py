"""The output directory: ownership check, run lock, staging area and the journaled commit.

Layout under DIR:
    manifest.json        the committed run's record (written last)
    report.html          the same run, as a page a person reads
    predictions/, errors/  the committed run's files
    _lock                held by the run writing into DIR
    _staging/<run_id>/   a run's files until commit; `COMMIT` inside marks it ready to move

A run writes only into its staging directory. The commit first writes the `COMMIT` journal
(the list of final files), then replaces the old files, then `manifest.json`. A run killed before
the journal leaves the previous output untouched; a run killed during the commit is rolled forward
by the next run before it starts. SIGINT and SIGTERM wait for the commit to end
(pipeline.run); only a kill (SIGKILL, a lost machine) can leave a commit half done.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import tempfile
import threading
import time

from apache_beam.io.filesystems import FileSystems

from models.errors import is_unreachable, one_line
from pipeline.errors import ConfigError, RunFailed
from pipeline.manifest import PRODUCER

_LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REPORT = "report.html"
QUALITY = "quality.json"  # python -m pipeline.evaluate's, of the committed run
LOCK = "_lock"
STAGING = "_staging"
COMMIT = "COMMIT"
OUTPUT_DIRS = ("predictions", "errors")
HEARTBEAT_S = 60
STALE_AFTER_S = 10 * 60
# A lock the job owns (--wait false: the launcher is gone) is kept fresh by the job's workers,
# which may take minutes to start (a Dataflow worker boots and installs the package first).
JOB_STALE_AFTER_S = 30 * 60
# Test hook, right after a commit's journal is written, before any file moves: "journal" kills
# the committing process (SIGKILL: what a lost machine does at worst); "sigterm_launcher" sends
# SIGTERM to the launcher a DirectRunner worker process runs under, and lets it arrive.
KILL_HOOK = "BEAMSCORE_TEST_KILL_IN_COMMIT"


def _test_hook(what: str) -> None:
    import signal

    if what == "journal":
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "sigterm_launcher":
        pid = os.getppid()
        while pid > 1:  # up to the process that runs pipeline.run
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"pipeline.run" in f.read():
                    break
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(pid, signal.SIGTERM)
        time.sleep(1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def is_remote(path: str) -> bool:
    """Whether a path is a URL (gs://...) rather than a local path."""
    return "://" in path


def list_files(directory: str) -> list[str]:
    """Every file under a directory, recursively ([] when it does not exist)."""
    if not is_remote(directory):
        return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
    return [m.path for m in FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list]


def read_json(path: str) -> dict | None:
    """A JSON file's object, or None if it does not exist or is not a JSON object."""
    data = read_bytes(path)
    return None if data is None else _json_object(data)


def read_bytes(path: str) -> bytes | None:
    """A file's bytes, or None if it does not exist."""
    if not FileSystems.exists(path):
        return None
    try:  # it may go between the two calls: a lock another run deleted just now
        with FileSystems.open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except Exception as e:
        from google.api_core.exceptions import NotFound

        if isinstance(e, NotFound):
            return None
        raise


def _json_object(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_json(path: str, data: dict) -> None:
    """Writes a JSON file; locally through a rename so readers never see half a file."""
    text = json.dumps(data, indent=2, sort_keys=False).encode()
    if is_remote(path):
        with FileSystems.create(path, mime_type="application/json") as f:
            f.write(text)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"  # the heartbeat is a thread
    with open(tmp, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _move(sources: list[str], destinations: list[str]) -> None:
    if not sources:
        return
    if not is_remote(destinations[0]):
        for d in destinations:
            os.makedirs(os.path.dirname(d), exist_ok=True)
    FileSystems.rename(sources, destinations)


def check_usable(path: str) -> None:
    """Refuses (exit 2) an output path that is a file, lies under a file, cannot be written, or
    is a non-empty directory of someone else's; a bucket that does not answer is exit 3. Writes
    nothing: the lock, taken once every launch check passed, is the run's first write (and a
    lock that cannot be created is exit 2 too)."""
    if is_remote(path):
        check_reachable(path)
    else:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"--output {path} is a file, not a directory")
        existing = path
        while existing and not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if existing and not os.path.isdir(existing):
            raise ConfigError(f"--output {path} lies under {existing}, which is a file")
        if existing and not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"--output {path} cannot be written: no write permission on {existing}"
            )
    check_owned(path)


def check_reachable(path: str) -> None:
    """A gs:// DIR's bucket answers within seconds (exit 3 when Cloud Storage cannot be reached,
    exit 2 when the bucket is missing or may not be listed); before anything that would wait
    on the storage client's own retries (minutes)."""
    if path.startswith("gs://"):
        from pipeline import gcs

        gcs.check_flag(path, "--output")


def check_owned(path: str) -> None:
    """Refuses a non-empty DIR that holds no manifest of this tool (exit 2)."""
    try:
        manifest = read_json(FileSystems.join(path, MANIFEST))
        files = [] if manifest and manifest.get("producer") == PRODUCER else list_files(path)
    except Exception as e:  # noqa: BLE001 - the storage went away after it answered the check
        if is_unreachable(e):
            raise RunFailed(f"--output {path}: cannot be read: {one_line(e)}") from e
        raise
    prefix = path.rstrip("/") + "/"
    foreign = [f for f in files if not f.removeprefix(prefix).startswith((STAGING + "/", LOCK))]
    if foreign:
        raise ConfigError(
            f"output directory {path} is not empty and holds no manifest.json from this "
            f"tool (found {foreign[0].removeprefix(prefix)}); refusing to write into it"
        )


class LockLost(Exception):
    """Another run took this run's lock: it must not commit."""


_JOB_BEATS: set[tuple[str, str]] = set()  # the job locks this process keeps fresh
_JOB_BEATS_LOCK = threading.Lock()


def keep_job_lock(path: str, run_id: str) -> None:
    """Keeps a job-owned lock fresh from a worker: one daemon thread per process and lock
    refreshes its heartbeat every HEARTBEAT_S while the lock is still this run's, and stops
    once it is not (the commit stage released it, or another run took it over)."""
    key = (path, run_id)
    with _JOB_BEATS_LOCK:
        if key in _JOB_BEATS:
            return
        _JOB_BEATS.add(key)

    def beat() -> None:
        out = OutputDir(path, run_id)
        try:
            while out.refresh_job_lock():
                time.sleep(HEARTBEAT_S)
        finally:
            with _JOB_BEATS_LOCK:
                _JOB_BEATS.discard(key)

    threading.Thread(target=beat, daemon=True, name=f"lock-{run_id}").start()


class OutputDir:
    """One run's view of DIR: holds the lock, stages and commits."""

    def __init__(self, path: str, run_id: str):
        self.path = path.rstrip("/")
        self.run_id = run_id
        self.staging = self.join(STAGING, run_id)
        self._lock_path = self.join(LOCK)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._generation: int | None = None  # the lock object's, on gs://
        self._lost: str | None = None
        self.taken_over: dict | None = None  # the lock record of a dead run this run replaced
        self._record_lock = threading.Lock()  # the heartbeat thread and the main thread write it
        self.journaled = False  # the commit's journal is written: DIR is this run's to finish
        self.committed = False  # the commit is done
        self._adopted = False  # the commit stage checked the lock is this run's: it releases it
        self._handed = False  # the launcher handed the lock to the job (--wait false)
        self._record: dict = {}

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.path, *parts)

    def acquire_lock(self) -> None:
        """Takes DIR's lock, or refuses (exit 2) while another live run holds it."""
        self._record = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": _now().isoformat(),
            "heartbeat_at": _now().isoformat(),
        }
        if not self._create_exclusive(self._record):
            held = read_json(self._lock_path)
            # None: the lock went between the two calls (its run ended, or another took it over)
            if held is not None or not self._create_exclusive(self._record):
                self._take_over(held or read_json(self._lock_path) or {})
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    def _take_over(self, held: dict) -> None:
        """The lock holds `held`: refuses (exit 2) while that run lives, else takes it over."""
        if not self._is_dead(held):
            raise ConfigError(
                f"output directory {self.path} is locked by run {held.get('run_id', '?')} "
                f"(host {held.get('host', '?')}, pid {held.get('pid', '?')}, last heartbeat "
                f"{held.get('heartbeat_at', '?')}); if that run is gone, delete "
                f"{self._lock_path} and start again"
            )
        _LOG.warning("taking over the lock of run %s, which is gone", held.get("run_id"))
        if not self._delete_if_still(held) or not self._create_exclusive(self._record):
            raise ConfigError(f"output directory {self.path} was locked by another run just now")
        self.taken_over = held

    def _delete_if_still(self, held: dict) -> bool:
        """Deletes the lock only if it still holds the dead run's record `held`: of two runs
        taking over the same dead lock at once, one deletes it, the other finds it changed."""
        if is_remote(self._lock_path):
            from pipeline import gcs

            current = gcs.read_with_generation(self._lock_path)
            if current is None or (_json_object(current[0]) or {}) != held:
                return False
            return gcs.delete_if_generation(self._lock_path, current[1])
        import fcntl

        try:
            fd = os.open(self._lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # the other run taking over waits here
            try:
                same_file = os.stat(self._lock_path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                return False
            if not same_file or (_json_object(f.read()) or {}) != held:
                return False
            os.remove(self._lock_path)
            return True

    def hand_lock_to_job(self, job: str) -> None:
        """The launcher will not wait (--wait false): the lock now belongs to the job. Its
        heartbeat stops here; the job's workers keep it fresh (keep_job_lock) and its commit
        stage releases it. Until then no other run takes it over while its heartbeat is younger
        than JOB_STALE_AFTER_S, whatever became of this process."""
        self.update_lock(owner="job", job=job, stale_after_s=JOB_STALE_AFTER_S)
        self._handed = True
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None

    def adopt_lock(self) -> None:
        """The commit stage, maybe in another process than the launcher that took the lock:
        raises LockLost unless the lock is still this run's; clears a failed attempt's mark."""
        held = self._read_lock()
        record = held[0] if held else {}
        if record.get("run_id") != self.run_id:
            raise LockLost(
                f"run {record['run_id']} took over the lock"
                if record.get("run_id")
                else f"the lock {self._lock_path} is gone"
            )
        self._record = record
        self._generation = held[1]
        self._adopted = True
        if record.pop("ended", None) is not None:  # a retry of a failed commit attempt
            self._refresh()

    def mark_lock_ended(self, why: str) -> None:
        """The job's commit failed: the lock says so, so the next run takes it over at once
        (a retry of the same commit clears the mark, if the lock is still this run's)."""
        with self._record_lock:
            self._record["ended"] = why
            self._refresh_locked()

    def refresh_job_lock(self) -> bool:
        """One heartbeat of a job-owned lock, from a worker; whether the lock is still this
        run's (a storage hiccup counts as yes: the next beat tries again)."""
        try:
            held = self._read_lock()
            if held is None or held[0].get("run_id") != self.run_id:
                return False
            self._record, self._generation = held
            self._refresh()
        except Exception as e:  # noqa: BLE001 - the next beat tries again
            _LOG.warning("could not refresh the lock %s: %s", self._lock_path, one_line(e))
        return True

    def _read_lock(self) -> tuple[dict, int | None] | None:
        """The lock's record and (on gs://) its generation, or None when there is no lock."""
        if is_remote(self._lock_path):
            from pipeline import gcs

            current = gcs.read_with_generation(self._lock_path)
            return None if current is None else (_json_object(current[0]) or {}, current[1])
        record = read_json(self._lock_path)
        return None if record is None else (record, None)

    def update_lock(self, **fields) -> None:
        """Adds fields to the lock record (written now, and at every heartbeat)."""
        with self._record_lock:
            self._record.update(fields)
            self._refresh_locked()

    def check_lock(self) -> None:
        """Raises LockLost when another run took the lock (or it could not be kept)."""
        if self._lost is None:
            self._refresh()
        if self._lost is not None:
            raise LockLost(self._lost)

    def release_lock(self) -> None:
        """Stops the heartbeat and deletes the lock, only if it is still this run's."""
        self._stop.set()
        if self._heartbeat is None and not self._adopted and not self._handed:
            return
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        self._adopted = self._handed = False
        if self._lost is not None:
            return
        try:
            if not is_remote(self._lock_path):
                if (read_json(self._lock_path) or {}).get("run_id") == self.run_id:
                    os.remove(self._lock_path)
                return
            from pipeline import gcs

            # Workers or the launcher may refresh it meanwhile: a new generation, same run.
            for _ in range(5):
                if gcs.delete_if_generation(self._lock_path, self._generation):
                    return
                held = self._read_lock()
                if held is None or held[0].get("run_id") != self.run_id:
                    return
                self._generation = held[1]
        except Exception as e:  # noqa: BLE001 - a stale lock is taken over by the next run
            _LOG.warning("could not remove the lock %s: %s", self._lock_path, e)

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(HEARTBEAT_S):
            if self._refresh():
                last_ok = time.monotonic()
            elif self._lost is None and time.monotonic() - last_ok > STALE_AFTER_S - HEARTBEAT_S:
                # Soon another run may take the lock over as stale: stop counting on it.
                self._lost = (
                    f"the lock {self._lock_path} could not be refreshed for "
                    f"{time.monotonic() - last_ok:.0f}s"
                )
            if self._lost is not None:
                _LOG.error("%s; this run will not commit", self._lost)
                return

    def _refresh(self) -> bool:
        """Rewrites the lock's heartbeat if the lock is still this run's; whether it did."""
        with self._record_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        self._record["heartbeat_at"] = _now().isoformat()
        data = json.dumps(self._record).encode()
        try:
            if is_remote(self._lock_path):
                from pipeline import gcs

                generation = gcs.replace_if_generation(self._lock_path, data, self._generation)
                if generation is None:
                    held = read_json(self._lock_path) or {}
                    self._lost = f"run {held.get('run_id', '?')} took over the lock"
                    return False
                self._generation = generation
                return True
            held = read_json(self._lock_path) or {}
            if held.get("run_id") != self.run_id:
                self._lost = f"run {held.get('run_id', '?')} took over the lock"
                return False
            write_json(self._lock_path, self._record)
            return True
        except Exception as e:  # noqa: BLE001 - retried at the next beat
            _LOG.warning("could not refresh the lock %s: %s", self._lock_path, e)
            return False

    @staticmethod
    def _is_dead(held: dict) -> bool:
        """A lock's run is provably dead (same host, no such pid), stale (no heartbeat), or
        ended (its job's commit failed). A lock its job owns (the launcher did not wait) does
        not die with the launcher's process: only its heartbeat counts, which the job's workers
        keep fresh, with the longer JOB_STALE_AFTER_S it records."""
        if held.get("ended"):
            return True
        job_owned = held.get("owner") == "job"
        if (
            not job_owned
            and held.get("host") == socket.gethostname()
            and isinstance(held.get("pid"), int)
        ):
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        try:
            beat = datetime.datetime.fromisoformat(held["heartbeat_at"])
        except (KeyError, TypeError, ValueError):
            return True
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=datetime.UTC)
        stale_after = held.get("stale_after_s") if job_owned else None
        if not isinstance(stale_after, int | float):
            stale_after = STALE_AFTER_S
        return (_now() - beat).total_seconds() > stale_after

    def _create_exclusive(self, record: dict) -> bool:
        data = json.dumps(record).encode()
        try:
            if is_remote(self._lock_path):
                from pipeline import gcs

                self._generation = gcs.create_exclusive(self._lock_path, data)
                return self._generation is not None
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"--output {self.path} cannot be written: {e}") from e
            # written whole under another name, then linked: a reader never sees a lock
            # created but still empty, which would read as a dead run's
            fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.link(tmp, self._lock_path)
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                return self._create_exclusive_unlinked(data)  # no hard links (gcsfuse, SMB)
            finally:
                os.remove(tmp)
            return True
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted into exit 2 or exit 3
            if is_unreachable(e):
                raise RunFailed(f"cannot create the lock {self._lock_path}: {one_line(e)}") from e
            raise ConfigError(f"cannot create the lock {self._lock_path}: {one_line(e)}") from e

    def _create_exclusive_unlinked(self, data: bytes) -> bool:
        try:
            fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

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

    def discard_staging(self) -> None:
        """Drops this run's staging, unless its commit journal is written (by this process or
        by the job's commit stage): then the commit stopped half-way, and the staging is what
        the next run needs to finish it."""
        if self.commit_state() == "none":
            self._delete_tree(self.staging)

    def commit_state(self) -> str:
        """What DIR holds of this run, whoever committed it: `committed` (its manifest is
        DIR's), `half` (its journal is written, the commit not finished), `none`."""
        if self.committed:
            return "committed"
        if self.journaled or FileSystems.exists(FileSystems.join(self.staging, COMMIT)):
            return "half"
        if (read_json(self.join(MANIFEST)) or {}).get("run_id") == self.run_id:
            return "committed"
        return "none"

    def delete_staging(self) -> None:
        """Drops this run's staging, whatever it holds (its commit is done)."""
        self._delete_tree(self.staging)

    def journal(self) -> dict | None:
        """This run's commit journal, if its commit was begun and not finished."""
        return read_json(FileSystems.join(self.staging, COMMIT))

    def finish_commit(self, journal: dict) -> None:
        """Finishes this run's own commit from its journal (a retried or rerun commit stage)."""
        self.journaled = True
        self._roll_forward(self.staging, journal)
        self.committed = True

    def staged_files(self, summary: dict) -> list[str]:
        """The files the run's successful bundles wrote (as its summary names them), relative to
        DIR (predictions/...): a retried bundle's leftovers in the staging directory are never
        committed."""
        prefix = self.staging + "/"
        return sorted(p.removeprefix(prefix) for p in summary["files"])

    def read_staged(self, name: str) -> dict | None:
        """A JSON file the pipeline wrote into the staging directory, or None."""
        return read_json(FileSystems.join(self.staging, name))

    def commit(
        self,
        manifest: dict,
        files: list[str],
        profile: dict | None = None,
        errors_summary: dict | None = None,
    ) -> None:
        """Makes the staged files, the report and the manifest the directory's output, replacing
        the old ones; the manifest is written last."""
        if self._write_report(manifest, profile, errors_summary):
            files = [*files, REPORT]
            manifest["report"] = REPORT
        journal = {"run_id": self.run_id, "files": files, "manifest": manifest}
        write_json(FileSystems.join(self.staging, COMMIT), journal)
        self.journaled = True
        if os.environ.get(KILL_HOOK):
            _test_hook(os.environ[KILL_HOOK])
        self._roll_forward(self.staging, journal)
        self.committed = True

    def _write_report(self, manifest: dict, profile, errors_summary) -> bool:
        """Renders report.html into the staging directory; a report that cannot be made is a
        warning, never a reason to lose the run."""
        from pipeline.report import render_report

        try:
            page = render_report(manifest, profile, (errors_summary or {}).get("groups", []))
            with FileSystems.create(
                FileSystems.join(self.staging, REPORT), mime_type="text/html"
            ) as f:
                f.write(page.encode("utf-8"))
        except Exception as e:  # noqa: BLE001 - the report is a view of the manifest, not data
            _LOG.warning("could not write %s: %s", REPORT, one_line(e, with_type=True))
            return False
        return True

    def _roll_forward(self, run_dir: str, journal: dict) -> None:
        keep = {self.join(f) for f in journal["files"]}
        old = [f for d in OUTPUT_DIRS for f in list_files(self.join(d)) if f not in keep]
        for name in (REPORT, QUALITY):  # the previous run's page and quality must not outlive it
            if self.join(name) not in keep and FileSystems.exists(self.join(name)):
                old.append(self.join(name))
        if old:
            FileSystems.delete(old)
        pending = [f for f in journal["files"] if FileSystems.exists(FileSystems.join(run_dir, f))]
        _move([FileSystems.join(run_dir, f) for f in pending], [self.join(f) for f in pending])
        write_json(self.join(MANIFEST), journal["manifest"])
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
