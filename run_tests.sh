#!/usr/bin/env bash
# Bootstraps .venv like run_local.sh, lints, then runs the whole test suite (arguments go to pytest)
# but the one test that pip-installs the Dataflow package from the index into a fresh virtualenv
# (minutes): `./run_tests.sh -m worker_install` runs it, as .ci/run does in its second step.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
scripts/install_browser.sh
# The BigQuery emulator's own virtualenv (tests/conftest.py; built once into .cache/, about 40 s
# the first time): an install like .venv's, done here so the tests' time is their own.
"$VENV/bin/python" -c "from tests.conftest import _bqemulator_venv; _bqemulator_venv()"
"$VENV/bin/ruff" check --no-cache .
"$VENV/bin/ruff" format --no-cache --check .
set +e
# Two workers on a 2-core machine; the ten slowest tests are listed at the end, so growth is seen.
"$VENV/bin/python" -m pytest -q -n 2 -m "not worker_install" --durations=10 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
