#!/usr/bin/env bash
# Regenerates constraints.txt: resolves setup.py's ranges afresh in a throw-away virtualenv and
# freezes the result. Run it to upgrade dependencies, then ./run_tests.sh and the bench.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# The launcher's and the workers' Python (the Flex Template image is Python 3.11).
"${PYTHON:-python3.11}" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --quiet --upgrade pip
# Without the lock file, setup.py states only its ranges.
mkdir "$TMP/src" && cp -r "$ROOT/setup.py" "$ROOT/pipeline" "$ROOT/scoring" "$ROOT/service" "$ROOT/transforms" "$ROOT/models" "$TMP/src/"
"$TMP/venv/bin/python" -m pip install --quiet "$TMP/src[test,xgboost,lightgbm,explain,docs]"
{
  head -3 "$ROOT/constraints.txt"
  "$TMP/venv/bin/python" -m pip freeze | grep -v -i '^beamscore'
} >"$TMP/constraints.txt"
mv "$TMP/constraints.txt" "$ROOT/constraints.txt"
echo "wrote $ROOT/constraints.txt"
