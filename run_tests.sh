#!/usr/bin/env bash
# Bootstraps .venv like run_local.sh, lints, builds the docs (mkdocs --strict), then runs the
# whole test suite (arguments go to pytest) but the two tests that pip-install the Dataflow package and the serving image from the index
# into fresh virtualenvs (minutes): `./run_tests.sh -m "worker_install or image_install" -n 0`
# runs them, as .ci/run does in its second step, with the service's load test (`-m load`).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
scripts/install_browser.sh
# The BigQuery emulator's own virtualenv (tests/conftest.py; built once into .cache/, about 40 s
# the first time): an install like .venv's, done here so the tests' time is their own.
"$VENV/bin/python" -c "from tests.conftest import _bqemulator_venv; _bqemulator_venv()"
"$VENV/bin/ruff" check --no-cache .
"$VENV/bin/ruff" format --no-cache --check .
# The docs site: a broken link or anchor, or a page left out of the nav, fails the build.
# (Not --quiet: it hides the warnings from --strict's count too.)
SITE="$(mktemp -d)"
if ! NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --site-dir "$SITE/site" >"$SITE/log" 2>&1; then
  grep -v "^INFO" "$SITE/log" >&2
  echo "error: the docs do not build (mkdocs build --strict)" >&2
  rm -rf "$SITE"
  exit 1
fi
rm -rf "$SITE"
set +e
# Two workers on a 2-core machine; the ten slowest tests are listed at the end, so growth is seen.
"$VENV/bin/python" -m pytest -q -n 2 -m "not worker_install and not image_install and not load" --durations=10 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
