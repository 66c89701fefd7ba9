"""The input checksums the launcher works out on a thread while it loads the model."""

from __future__ import annotations

import threading

from pipeline import fingerprints


def _files(tmp_path, n: int = 3, size: int = 3 << 20) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"part-{i}.csv"
        path.write_bytes(bytes([i]) * size)
        paths.append(str(path))
    return paths


def test_checksums_on_a_thread_are_the_checksums(tmp_path):
    files = [*_files(tmp_path), str(tmp_path / "gone.csv")]  # a file that vanished: left out
    background = fingerprints.Background(files)
    assert background.result() == fingerprints.contents(files)
    assert sorted(background.result()) == sorted(files[:3])
    assert all(
        v.startswith("crc32c:") and v.endswith(f":{3 << 20}") for v in background.result().values()
    )


def test_a_stopped_checksum_gives_up_before_any_file_is_done(tmp_path):
    stop = threading.Event()
    stop.set()
    assert fingerprints.contents(_files(tmp_path), stop) == {}
