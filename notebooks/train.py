# Databricks notebook source
# MAGIC %md
# MAGIC # shoprec: train
# MAGIC Fine-tunes the two-tower retriever and the ranking head (Petastorm feeds Horovod), tracks the run in
# MAGIC MLflow and registers the model. Run it on a GPU cluster.
# MAGIC
# MAGIC All logic lives in the `shoprec` library (installed from the bundle's wheel); this notebook
# MAGIC only passes its widgets to it, exactly as `shoprec train` would.

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "Environment (conf/<env>.yaml)")
dbutils.widgets.text("overrides", "", "Overrides: KEY=VALUE, separated by ;")
dbutils.widgets.text("processing_date", "", "Processing date, YYYY-MM-DD (empty: all that arrived)")

# COMMAND ----------

from shoprec.cli import notebook_stage

notebook_stage(
    "train",
    dbutils.widgets.get("env"),
    dbutils.widgets.get("overrides"),
    dbutils.widgets.get("processing_date"),
)
