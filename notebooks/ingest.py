# Databricks notebook source
# MAGIC %md
# MAGIC # shoprec: ingest
# MAGIC Loads new raw export files into the bronze Delta tables; files already loaded are skipped, and with
# MAGIC a processing date only export folders up to that day are taken.
# MAGIC
# MAGIC All logic lives in the `shoprec` library (installed from the bundle's wheel); this notebook
# MAGIC only passes its widgets to it, exactly as `shoprec ingest` would.

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "Environment (conf/<env>.yaml)")
dbutils.widgets.text("overrides", "", "Overrides: KEY=VALUE, separated by ;")
dbutils.widgets.text("processing_date", "", "Processing date, YYYY-MM-DD (empty: all that arrived)")

# COMMAND ----------

from shoprec.cli import notebook_stage

notebook_stage(
    "ingest",
    dbutils.widgets.get("env"),
    dbutils.widgets.get("overrides"),
    dbutils.widgets.get("processing_date"),
)
