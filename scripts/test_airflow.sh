#!/usr/bin/env bash
# Runs the Airflow examples' tests (tests_airflow/): Airflow's own DagBag imports
# examples/airflow_dag.py and examples/composer_dag.py, and dag.test() runs them (the first on the
# DirectRunner, the second against the Cloud Storage emulator). Not part of ./run_tests.sh,
# since installing Airflow takes a while: Airflow lives in its own virtualenv, .cache/airflow/venv,
# built once and rebuilt only when its requirements change. The DAG's task runs the launcher with
# the project's .venv (./run_tests.sh builds it; BEAMSCORE_PYTHON=/path/to/python overrides it).
# Arguments go to pytest.
#   scripts/test_airflow.sh --lock    re-resolves tests_airflow/constraints.txt (then rerun this)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/airflow"
REQUIREMENTS="$ROOT/examples/requirements-airflow.txt"
CONSTRAINTS="$ROOT/tests_airflow/constraints.txt"
# The versions in the constraints were resolved for this Python.
PY="${PYTHON:-python3.11}"

if [ "${1:-}" = "--lock" ]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m venv "$TMP/venv"
  "$TMP/venv/bin/python" -m pip install --quiet -r "$REQUIREMENTS" pytest
  {
    echo "# Every package version of the Airflow tests' virtualenv, resolved for $("$PY" --version)"
    echo "# from examples/requirements-airflow.txt and pytest."
    echo "# Regenerate: scripts/test_airflow.sh --lock"
    "$TMP/venv/bin/python" -m pip freeze
  } >"$CONSTRAINTS"
  echo "wrote $CONSTRAINTS"
  exit 0
fi

export BEAMSCORE_PYTHON="${BEAMSCORE_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$BEAMSCORE_PYTHON" ]; then
  echo "error: no $BEAMSCORE_PYTHON: run ./run_tests.sh first (it builds .venv)," \
    "or set BEAMSCORE_PYTHON" >&2
  exit 1
fi

mkdir -p "$CACHE"
(
  # One build at a time; a second caller waits, then finds the venv ready.
  flock 9
  WANT="$(cat "$REQUIREMENTS" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1) $("$PY" --version)"
  if [ ! -f "$CACHE/ready" ] || [ "$(cat "$CACHE/ready")" != "$WANT" ]; then
    echo "installing Airflow and its Google provider into $CACHE/venv (about five minutes)" >&2
    rm -f "$CACHE/ready"
    "$PY" -m venv --clear "$CACHE/venv"
    "$CACHE/venv/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -r "$REQUIREMENTS" pytest >&2
    echo "$WANT" >"$CACHE/ready"
  fi
) 9>"$CACHE/.lock"

cd "$ROOT"
# The tests may write nowhere in the checkout but .cache/: no bytecode beside the sources either.
export PYTHONDONTWRITEBYTECODE=1
before="$(git status --porcelain --ignored | grep -v '^!! .cache/$' || true)"
set +e
"$CACHE/venv/bin/python" -m pytest -q tests_airflow "$@"
status=$?
set -e
after="$(git status --porcelain --ignored | grep -v '^!! .cache/$' || true)"
if [ "$before" != "$after" ]; then
  echo "error: the Airflow tests changed the checkout:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
