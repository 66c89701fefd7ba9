#!/usr/bin/env bash
# Runs the scoring job on Google Cloud Dataflow. Reads PROJECT, REGION and BUCKET from the
# environment; every other argument goes to `python -m pipeline.run` (and so to Beam).
#   PROJECT=my-proj REGION=europe-west1 BUCKET=my-bucket ./run_dataflow.sh \
#     --input 'gs://my-bucket/in/{run_date}/*.parquet' --model gs://my-bucket/models/m.joblib \
#     --output 'gs://my-bucket/scores/{run_date}'
#   or, for a BigQuery table (read through the Storage Read API):
#     --input bq://my-proj.sales.events --input_filter "event_date = '{run_date}'" ...
set -euo pipefail
cd "$(dirname "$0")"
# A missing setting is bad configuration: exit 2, as for the tool's own flags.
missing() {
  echo "error: set $1 to $2 (see the README: Running on Dataflow)" >&2
  exit 2
}
[ -n "${PROJECT:-}" ] || missing PROJECT "the Google Cloud project id"
[ -n "${REGION:-}" ] || missing REGION "the Dataflow region, e.g. europe-west1"
[ -n "${BUCKET:-}" ] || missing BUCKET "a bucket for Dataflow temp and staging files (no gs://)"
source scripts/bootstrap.sh
# A unique job name: name, run date, launch time (UTC). JOB_NAME in the environment overrides it.
RUN_DATE="$(date -u +%Y-%m-%d)"
prev=""
for arg in "$@"; do
  case "$arg" in
    --run_date=*) RUN_DATE="${arg#--run_date=}" ;;
    *) [ "$prev" = "--run_date" ] && RUN_DATE="$arg" ;;
  esac
  prev="$arg"
done
JOB_NAME="${JOB_NAME:-${JOB_PREFIX:-beamscore}-${RUN_DATE}-$(date -u +%Y%m%d-%H%M%S)}"
if ! [[ "$JOB_NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
  echo "error: Dataflow job name '$JOB_NAME' must be lowercase letters, digits and '-', starting with a letter (check JOB_NAME, JOB_PREFIX, --run_date)" >&2
  exit 2
fi
exec "$VENV/bin/python" -m pipeline.run \
  --runner DataflowRunner \
  --project "$PROJECT" \
  --region "$REGION" \
  --temp_location "gs://$BUCKET/dataflow/tmp" \
  --staging_location "gs://$BUCKET/dataflow/staging" \
  --setup_file ./setup.py \
  --job_name "$JOB_NAME" \
  "$@"
