#!/usr/bin/env bash
# Bootstraps .venv like run_local.sh, lints, then runs the whole test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
scripts/install_browser.sh
"$VENV/bin/ruff" check --no-cache .
"$VENV/bin/ruff" format --no-cache --check .
set +e
# Two workers: the suite is mostly whole pipeline runs in subprocesses, on a 2-core machine.
"$VENV/bin/python" -m pytest -q -n 2 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
