# Databricks notebook source
# MAGIC %md
# MAGIC # shoprec: run the pipeline
# MAGIC Runs every stage in order (generate when configured → ingest → clean → features → train →
# MAGIC score → evaluate → report) on the configuration named by the widgets, and shows the tables it
# MAGIC wrote. All logic lives in the `shoprec` library; this notebook only calls it.

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "Environment (conf/<env>.yaml)")
dbutils.widgets.text("overrides", "", "Overrides: KEY=VALUE, separated by ;")
dbutils.widgets.text("processing_date", "", "Processing date, YYYY-MM-DD (empty: all that arrived)")

# COMMAND ----------

from shoprec.config import load_config, log_config
from shoprec.pipeline import run_pipeline
from shoprec.spark import get_spark

overrides = [o.strip() for o in dbutils.widgets.get("overrides").split(";") if o.strip()]
if dbutils.widgets.get("processing_date").strip():
    overrides.append(f"processing_date={dbutils.widgets.get('processing_date').strip()}")
cfg = load_config(dbutils.widgets.get("env"), overrides)
log_config(cfg)
spark = get_spark(cfg.spark)

# COMMAND ----------

result = run_pipeline(spark, cfg)
display(
    spark.createDataFrame(
        [(t.name, t.location, t.rows) for t in result.tables], "name string, location string, rows long"
    )
)
displayHTML(f"<pre>{result.headline}</pre><p>report: {result.report}</p>")
