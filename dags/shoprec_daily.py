"""shoprec, daily: ingest → clean → features → train → score → evaluate → promote, by spark-submit.

Each task is ``spark-submit jobs/<stage>.py --env ENV --date {{ ds }}``: the data interval's day
is the processing date of every stage (ingest takes export folders up to that day). The DAG holds
no pipeline logic; everything runs in the shoprec wheel on the Spark cluster. Settings come from
the Airflow worker's environment, read when the DAG is parsed:

==========================  ===============================================================
``SHOPREC_ENV``             configuration environment, ``conf/<env>.yaml`` (default cluster)
``SHOPREC_SPARK_CONN``      Airflow Spark connection id (default ``spark_default``)
``SHOPREC_JOBS_DIR``        folder of the ``jobs/*.py`` entry points (default: ``../jobs``)
``SHOPREC_WHEEL``           the shoprec wheel, shipped with ``--py-files`` (default: none,
                            shoprec installed on the cluster)
``SHOPREC_PACKAGES``        Maven packages (default: Delta Lake for Spark 4.0)
``SHOPREC_JARS``            local jar files instead of packages (a machine with no Maven access)
``SHOPREC_SET``             extra ``KEY=VALUE`` overrides for every stage, separated by ``;``
``SHOPREC_SCHEDULE``        cron or preset (default ``@daily``)
==========================  ===============================================================

``train`` runs every day but trains only when its inputs or settings changed, or when
``training.retrain`` (``daily``/``weekly``) says it is due; otherwise it re-uses the finished model
and registers no version, and ``score`` serves the champion as every day.

The pseudonymisation key and the MLflow tracking URI travel as the workers' environment
(``SHOPREC_PSEUDONYM_KEY``, ``MLFLOW_TRACKING_URI``), never in the DAG. On Databricks, run the
bundle's job instead (``databricks.yml``; see docs/running.md, section Airflow, for
``DatabricksRunNowOperator``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG

STAGES = ("ingest", "clean", "features", "train", "score", "evaluate", "promote")
#: Training and scoring run longest; the rest finish in minutes on a daily slice.
TIMEOUTS = {"train": timedelta(hours=8), "score": timedelta(hours=4)}

ENV = os.environ.get("SHOPREC_ENV", "cluster")
JOBS = Path(os.environ.get("SHOPREC_JOBS_DIR", Path(__file__).resolve().parents[1] / "jobs"))
WHEEL = os.environ.get("SHOPREC_WHEEL") or None
JARS = os.environ.get("SHOPREC_JARS") or None
PACKAGES = None if JARS else os.environ.get("SHOPREC_PACKAGES", "io.delta:delta-spark_2.13:4.0.1")
OVERRIDES = [s.strip() for s in os.environ.get("SHOPREC_SET", "").split(";") if s.strip()]

with DAG(
    dag_id="shoprec_daily",
    description="Shop behaviour of the day in, fresh recommendations for every user out",
    schedule=os.environ.get("SHOPREC_SCHEDULE", "@daily"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # each day builds on the previous day's tables
    tags=["shoprec"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=2),
    },
) as dag:
    previous = None
    for stage in STAGES:
        args = ["--env", ENV, "--date", "{{ ds }}"]
        for override in OVERRIDES:
            args += ["--set", override]
        task = SparkSubmitOperator(
            task_id=stage,
            application=str(JOBS / f"{stage}.py"),
            application_args=args,
            conn_id=os.environ.get("SHOPREC_SPARK_CONN", "spark_default"),
            name=f"shoprec-{stage}",
            py_files=WHEEL,
            packages=PACKAGES,
            jars=JARS,
            conf={
                "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            },
            execution_timeout=TIMEOUTS.get(stage, timedelta(hours=2)),
        )
        if previous is not None:
            previous >> task
        previous = task
