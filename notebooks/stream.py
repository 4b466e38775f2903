# Databricks notebook source
# MAGIC %md
# MAGIC # shoprec: stream
# MAGIC Folds new events (files arriving in the raw events folders, or a Kafka topic) into silver and gold
# MAGIC micro-batch by micro-batch and re-scores the users they belong to, each list with its reason.
# MAGIC With `stream.trigger=availableNow` it catches up and stops; with `processingTime` it runs until
# MAGIC the notebook (or the job) is stopped, and a restart resumes from its checkpoint.
# MAGIC
# MAGIC All logic lives in the `shoprec` library (installed from the bundle's wheel); this notebook
# MAGIC only passes its widgets to it, exactly as `shoprec stream` would.

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "Environment (conf/<env>.yaml)")
dbutils.widgets.text("overrides", "", "Overrides: KEY=VALUE, separated by ;")
dbutils.widgets.text("processing_date", "", "Processing date, YYYY-MM-DD (unused by the stream)")

# COMMAND ----------

from shoprec.cli import notebook_stage

notebook_stage(
    "stream",
    dbutils.widgets.get("env"),
    dbutils.widgets.get("overrides"),
    dbutils.widgets.get("processing_date"),
)
