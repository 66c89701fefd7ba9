"""Nightly scoring with Airflow: launch the beamscore Flex Template for the run's date ({{ ds }}).

Set the Airflow variables beamscore_project, beamscore_region, beamscore_bucket and
beamscore_template (the gs:// path of the built template spec). Exit codes map to task outcomes:
the Dataflow job fails on exit 3 (retried) and 1/2 (a person must look), see the README.
"""

from __future__ import annotations

import datetime

from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

with DAG(
    dag_id="beamscore_nightly",
    schedule="0 3 * * *",
    start_date=datetime.datetime(2026, 11, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=10)},
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="score",
        project_id="{{ var.value.beamscore_project }}",
        location="{{ var.value.beamscore_region }}",
        body={
            "launchParameter": {
                "jobName": "beamscore-{{ ds_nodash }}",
                "containerSpecGcsPath": "{{ var.value.beamscore_template }}",
                "parameters": {
                    "input": "gs://{{ var.value.beamscore_bucket }}/in/{run_date}/*.parquet",
                    "model": "models:/churn@champion",
                    "output": "gs://{{ var.value.beamscore_bucket }}/scores/{run_date}",
                    "run_date": "{{ ds }}",
                    "max_error_rate": "0.001",
                },
            }
        },
    )
