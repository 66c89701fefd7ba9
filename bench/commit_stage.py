"""Times the commit as the pipeline's last stage against the launcher's commit (the code before
issue 18, taken from a git revision) on the 1M-row set, each run a whole separate process.

    .venv/bin/python bench/commit_stage.py [--before REV] [--repeats N]

Per run: the wall time of the process, and the commit's own time, from the manifest's
`finished_at` (stamped just before the report, the journal and the moves) to the moment
`manifest.json` was written (its modification time). Runs alternate between the two trees.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data"


def export(rev: str, into: Path) -> Path:
    """The tree of a revision, as files (git archive), to run its launcher from."""
    tar = into / "tree.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "archive", rev], cwd=REPO, stdout=f, check=True)
    with tarfile.open(tar) as t:
        t.extractall(into / "tree", filter="data")
    return into / "tree"


def run_once(tree: Path, python: str, out: Path) -> tuple[float, float]:
    argv = [
        python,
        "-m",
        "pipeline.run",
        "--input",
        str(DATA / "rows1m" / "*.parquet"),
        "--model",
        str(DATA / "light.joblib"),
        "--output",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.monotonic()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{tree}: exit {done.returncode}\n{done.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    stamped = datetime.datetime.fromisoformat(manifest["finished_at"]).timestamp()
    return wall, (out / "manifest.json").stat().st_mtime - stamped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="58653b6", help="the revision with the old commit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="beamscore-commit-bench-") as tmp:
        trees = {"launcher commit": export(args.before, Path(tmp)), "commit stage": REPO}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for i in range(args.repeats):
            for name, tree in trees.items():
                out = Path(tmp) / f"out-{name.split()[0]}-{i}"
                times[name].append(run_once(tree, args.python, out))
                print(f"{name}: wall {times[name][-1][0]:.2f}s, commit {times[name][-1][1]:.3f}s")
        print("\n| how | wall (median) | commit (median) |\n|---|---|---|")
        for name, runs in times.items():
            wall = statistics.median(w for w, _ in runs)
            commit = statistics.median(c for _, c in runs)
            print(f"| {name} | {wall:.2f} s | {commit:.3f} s |")


if __name__ == "__main__":
    main()
