# Databricks notebook source
# MAGIC %md
# MAGIC # shoprec: score
# MAGIC Scores candidates for every user with the champion model in an Arrow UDF, applies the business rules
# MAGIC per scenario and MERGEs the lists into Delta.
# MAGIC
# MAGIC All logic lives in the `shoprec` library (installed from the bundle's wheel); this notebook
# MAGIC only passes its widgets to it, exactly as `shoprec score` would.

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "Environment (conf/<env>.yaml)")
dbutils.widgets.text("overrides", "", "Overrides: KEY=VALUE, separated by ;")
dbutils.widgets.text("processing_date", "", "Processing date, YYYY-MM-DD (empty: all that arrived)")

# COMMAND ----------

from shoprec.cli import notebook_stage

notebook_stage(
    "score",
    dbutils.widgets.get("env"),
    dbutils.widgets.get("overrides"),
    dbutils.widgets.get("processing_date"),
)
