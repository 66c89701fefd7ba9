#!/usr/bin/env bash
# With no arguments: trains the demo model and writes demo input (if missing), then scores it on
# the DirectRunner. With arguments: passes them to `python -m pipeline.run`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
if [ "$#" -gt 0 ]; then
  exec "$VENV/bin/python" -m pipeline.run "$@"
fi
"$VENV/bin/python" -m models.demo --out demo
exec "$VENV/bin/python" -m pipeline.run \
  --input 'demo/input/*.parquet' --model demo/model.joblib --output demo/output
