"""DIR's lock: one run writes into an output directory at a time.

`_lock` holds the run's record (run id, host, pid, heartbeat). The launcher takes it before any
work and keeps it fresh from a heartbeat thread; with --wait false it hands it to the job, whose
workers keep it fresh (`keep_job_lock`) and whose commit stage releases it. A lock whose run is
provably dead (same host, no such pid), stale (no heartbeat for STALE_AFTER_S) or ended (its
job's commit failed) is taken over by the next run. Creating it is exclusive on local disks and
on gs:// alike (a hard link, an if-generation-match precondition).
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
from pipeline.output import LOCK, is_remote, json_object, read_json, write_json

_LOG = logging.getLogger(__name__)

HEARTBEAT_S = 60
STALE_AFTER_S = 10 * 60
# A lock the job owns (--wait false: the launcher is gone) is kept fresh by the job's workers,
# which may take minutes to start (a Dataflow worker boots and installs the package first).
JOB_STALE_AFTER_S = 30 * 60


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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
        lock = RunLock(path, run_id)
        try:
            while lock.refresh_for_job():
                time.sleep(HEARTBEAT_S)
        finally:
            with _JOB_BEATS_LOCK:
                _JOB_BEATS.discard(key)

    threading.Thread(target=beat, daemon=True, name=f"lock-{run_id}").start()


class RunLock:
    """One run's hold on DIR's `_lock`: taken at launch, kept fresh by a heartbeat thread (or,
    once the job owns it, by its workers), checked before the commit, released at the end."""

    def __init__(self, path: str, run_id: str):
        self.path = path.rstrip("/")
        self.run_id = run_id
        self.file = FileSystems.join(self.path, LOCK)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._generation: int | None = None  # the lock object's, on gs://
        self._lost: str | None = None
        self.taken_over: dict | None = None  # the lock record of a dead run this run replaced
        self._record_lock = threading.Lock()  # the heartbeat thread and the main thread write it
        self._adopted = False  # the commit stage checked the lock is this run's: it releases it
        self._handed = False  # the launcher handed the lock to the job (--wait false)
        self._record: dict = {}

    def acquire(self) -> None:
        """Takes DIR's lock, or refuses (exit 2) while another live run holds it."""
        self._record = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": _now().isoformat(),
            "heartbeat_at": _now().isoformat(),
        }
        if not self._create_exclusive(self._record):
            held = read_json(self.file)
            # None: the lock went between the two calls (its run ended, or another took it over)
            if held is not None or not self._create_exclusive(self._record):
                self._take_over(held or read_json(self.file) or {})
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    def _take_over(self, held: dict) -> None:
        """The lock holds `held`: refuses (exit 2) while that run lives, else takes it over."""
        if not self._is_dead(held):
            raise ConfigError(
                f"output directory {self.path} is locked by run {held.get('run_id', '?')} "
                f"(host {held.get('host', '?')}, pid {held.get('pid', '?')}, last heartbeat "
                f"{held.get('heartbeat_at', '?')}); if that run is gone, delete "
                f"{self.file} and start again"
            )
        _LOG.warning("taking over the lock of run %s, which is gone", held.get("run_id"))
        if not self._delete_if_still(held) or not self._create_exclusive(self._record):
            raise ConfigError(f"output directory {self.path} was locked by another run just now")
        self.taken_over = held

    def _delete_if_still(self, held: dict) -> bool:
        """Deletes the lock only if it still holds the dead run's record `held`: of two runs
        taking over the same dead lock at once, one deletes it, the other finds it changed."""
        if is_remote(self.file):
            from pipeline import gcs

            current = gcs.read_with_generation(self.file)
            if current is None or (json_object(current[0]) or {}) != held:
                return False
            return gcs.delete_if_generation(self.file, current[1])
        import fcntl

        try:
            fd = os.open(self.file, os.O_RDONLY)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # the other run taking over waits here
            try:
                same_file = os.stat(self.file).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                return False
            if not same_file or (json_object(f.read()) or {}) != held:
                return False
            os.remove(self.file)
            return True

    def hand_to_job(self, job: str) -> None:
        """The launcher will not wait (--wait false): the lock now belongs to the job. Its
        heartbeat stops here; the job's workers keep it fresh (keep_job_lock) and its commit
        stage releases it. Until then no other run takes it over while its heartbeat is younger
        than JOB_STALE_AFTER_S, whatever became of this process."""
        self.update(owner="job", job=job, stale_after_s=JOB_STALE_AFTER_S)
        self._handed = True
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None

    def adopt(self) -> None:
        """The commit stage, maybe in another process than the launcher that took the lock:
        raises LockLost unless the lock is still this run's; clears a failed attempt's mark."""
        held = self._read()
        record = held[0] if held else {}
        if record.get("run_id") != self.run_id:
            raise LockLost(
                f"run {record['run_id']} took over the lock"
                if record.get("run_id")
                else f"the lock {self.file} is gone"
            )
        self._record = record
        self._generation = held[1]
        self._adopted = True
        if record.pop("ended", None) is not None:  # a retry of a failed commit attempt
            self._refresh()

    def mark_ended(self, why: str) -> None:
        """The job's commit failed: the lock says so, so the next run takes it over at once
        (a retry of the same commit clears the mark, if the lock is still this run's)."""
        with self._record_lock:
            self._record["ended"] = why
            self._refresh_locked()

    def refresh_for_job(self) -> bool:
        """One heartbeat of a job-owned lock, from a worker; whether the lock is still this
        run's (a storage hiccup counts as yes: the next beat tries again)."""
        try:
            held = self._read()
            if held is None or held[0].get("run_id") != self.run_id:
                return False
            self._record, self._generation = held
            self._refresh()
        except Exception as e:  # noqa: BLE001 - the next beat tries again
            _LOG.warning("could not refresh the lock %s: %s", self.file, one_line(e))
        return True

    def _read(self) -> tuple[dict, int | None] | None:
        """The lock's record and (on gs://) its generation, or None when there is no lock."""
        if is_remote(self.file):
            from pipeline import gcs

            current = gcs.read_with_generation(self.file)
            return None if current is None else (json_object(current[0]) or {}, current[1])
        record = read_json(self.file)
        return None if record is None else (record, None)

    def update(self, **fields) -> None:
        """Adds fields to the lock record (written now, and at every heartbeat)."""
        with self._record_lock:
            self._record.update(fields)
            self._refresh_locked()

    def check(self) -> None:
        """Raises LockLost when another run took the lock (or it could not be kept)."""
        if self._lost is None:
            self._refresh()
        if self._lost is not None:
            raise LockLost(self._lost)

    def release(self) -> None:
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
            if not is_remote(self.file):
                if (read_json(self.file) or {}).get("run_id") == self.run_id:
                    os.remove(self.file)
                return
            from pipeline import gcs

            # Workers or the launcher may refresh it meanwhile: a new generation, same run.
            for _ in range(5):
                if gcs.delete_if_generation(self.file, self._generation):
                    return
                held = self._read()
                if held is None or held[0].get("run_id") != self.run_id:
                    return
                self._generation = held[1]
        except Exception as e:  # noqa: BLE001 - a stale lock is taken over by the next run
            _LOG.warning("could not remove the lock %s: %s", self.file, e)

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(HEARTBEAT_S):
            if self._refresh():
                last_ok = time.monotonic()
            elif self._lost is None and time.monotonic() - last_ok > STALE_AFTER_S - HEARTBEAT_S:
                # Soon another run may take the lock over as stale: stop counting on it.
                self._lost = (
                    f"the lock {self.file} could not be refreshed for "
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
            if is_remote(self.file):
                from pipeline import gcs

                generation = gcs.replace_if_generation(self.file, data, self._generation)
                if generation is None:
                    held = read_json(self.file) or {}
                    self._lost = f"run {held.get('run_id', '?')} took over the lock"
                    return False
                self._generation = generation
                return True
            held = read_json(self.file) or {}
            if held.get("run_id") != self.run_id:
                self._lost = f"run {held.get('run_id', '?')} took over the lock"
                return False
            write_json(self.file, self._record)
            return True
        except Exception as e:  # noqa: BLE001 - retried at the next beat
            _LOG.warning("could not refresh the lock %s: %s", self.file, e)
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
            if is_remote(self.file):
                from pipeline import gcs

                self._generation = gcs.create_exclusive(self.file, data)
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
                os.link(tmp, self.file)
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
                raise RunFailed(f"cannot create the lock {self.file}: {one_line(e)}") from e
            raise ConfigError(f"cannot create the lock {self.file}: {one_line(e)}") from e

    def _create_exclusive_unlinked(self, data: bytes) -> bool:
        try:
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
