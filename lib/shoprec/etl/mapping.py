"""Bring your own data: map a shop's export onto the raw contract, in configuration only.

A :class:`~shoprec.config.SourceConfig` names the files, their format and columns, optional
lookup files to join, and one Spark SQL expression per contract field. The result has exactly the
contract's columns and types, plus the text of unparseable records and the source file, so the
rest of the pipeline cannot tell a mapped shop from the generator's output.
"""

from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from shoprec import schemas as S
from shoprec.config import JoinConfig, ShoprecConfig, SourceConfig
from shoprec.errors import ShoprecError


def _reader(spark: SparkSession, fmt: str, options: dict[str, str], schema: StructType | None) -> object:
    reader = spark.read.options(**options)
    if schema is not None:
        if fmt != "parquet":
            schema = S.with_corrupt_record(schema)
            reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", S.CORRUPT_RECORD)
        reader = reader.schema(schema)
    return reader


def _load(
    spark: SparkSession, fmt: str, options: dict[str, str], schema: StructType | None, paths: list[str]
) -> DataFrame:
    reader = _reader(spark, fmt, options, schema)
    df: DataFrame
    if fmt == "json":
        df = reader.json(paths)  # type: ignore[attr-defined]
    elif fmt == "csv":
        df = reader.csv(paths)  # type: ignore[attr-defined]
    else:
        df = reader.parquet(*paths)  # type: ignore[attr-defined]
    if S.CORRUPT_RECORD not in df.columns:
        df = df.withColumn(S.CORRUPT_RECORD, F.lit(None).cast("string"))
    return df


def _ddl(text: str | None, key: str) -> StructType | None:
    if text is None:
        return None
    try:
        parsed = StructType.fromDDL(text)
    except Exception as exc:  # pyspark raises several types for bad DDL
        raise ShoprecError(f"{key}: not a valid Spark DDL schema ({text!r}): {exc}") from None
    if not isinstance(parsed, StructType):
        raise ShoprecError(f"{key}: {text!r} is not a list of columns")
    return parsed


def _join(spark: SparkSession, cfg: ShoprecConfig, df: DataFrame, join: JoinConfig, key: str) -> DataFrame:
    path = cfg.resolve(join.path, f"{key}.path")
    lookup = _load(spark, join.format, join.options, _ddl(join.schema_ddl, f"{key}.schema_ddl"), [path])
    lookup = lookup.drop(S.CORRUPT_RECORD)
    if join.key not in lookup.columns or join.key not in df.columns:
        raise ShoprecError(f"{key}.key: column {join.key!r} must be in both the source and {path}")
    return df.join(lookup, join.key, join.how)


def _expr(text: str, key: str, df: DataFrame) -> Column:
    try:
        column = F.expr(text)
        df.select(column).schema  # noqa: B018 - analysis only: reports unknown columns now
    except AnalysisException as exc:
        raise ShoprecError(
            f"{key}: {text!r} does not work on columns {df.columns}: {exc.getMessage()}"
        ) from None
    return column


def read_mapped(
    spark: SparkSession,
    cfg: ShoprecConfig,
    name: str,
    src: SourceConfig,
    files: list[str],
    contract: StructType,
) -> DataFrame:
    """Read ``files`` of source ``name`` and return rows in the contract's shape.

    Expressions run with Spark's strict (ANSI) semantics: parse with the ``try_`` functions
    (``try_to_timestamp``, ``try_cast``) so that one bad value becomes a null that a cleaning rule
    quarantines, rather than an error that stops the batch.
    """
    key = f"sources.{name}"
    unknown = sorted(set(src.columns) - set(contract.fieldNames()))
    if unknown:
        raise ShoprecError(
            f"{key}.columns: {', '.join(unknown)} not in the raw contract "
            f"(fields: {', '.join(contract.fieldNames())})"
        )
    # without the shop's own schema, the files follow the contract: read them with it, never inferred
    read_schema = _ddl(src.schema_ddl, f"{key}.schema_ddl") or contract
    nested = [f.name for f in read_schema.fields if isinstance(f.dataType, (ArrayType, MapType, StructType))]
    # files in the contract's own columns: CSV holds no lists, so its optional ones (the catalog's
    # links) are read by position as text and left empty, as the plain raw exports are
    empty = [n for n in nested if n in S.RELATIONS] if src.format == "csv" and src.schema_ddl is None else []
    if empty:
        read_schema = StructType(
            [StructField(f.name, StringType(), True) if f.name in empty else f for f in read_schema.fields]
        )
        nested = [n for n in nested if n not in empty]
    if src.format == "csv" and nested:
        raise ShoprecError(
            f"{key}: CSV cannot hold the column(s) {', '.join(nested)} of "
            f"{'schema_ddl' if src.schema_ddl else 'the raw contract'}; give {key}.schema_ddl with the "
            f"file's own (flat) columns and build them in {key}.columns, e.g. split(col, ',')"
        )
    df = _load(spark, src.format, src.options, read_schema, files)
    df = df.withColumn(S.SOURCE_FILE, F.col("_metadata.file_path"))
    for i, join in enumerate(src.joins):
        df = _join(spark, cfg, df, join, f"{key}.joins[{i}]")
    if src.schema_ddl is None and not src.columns:
        cols = [
            (F.lit(None) if f.name in empty else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in contract.fields
        ]
    else:
        cols = [
            (
                _expr(src.columns[f.name], f"{key}.columns.{f.name}", df)
                if f.name in src.columns
                else F.lit(None)
            )
            .cast(f.dataType)
            .alias(f.name)
            for f in contract.fields
        ]
    mapped = df.select(*cols, S.CORRUPT_RECORD, S.SOURCE_FILE)
    if src.event_codes:
        codes = F.create_map(*[F.lit(x) for kv in src.event_codes.items() for x in kv])
        mapped = mapped.withColumn(S.EVENT_TYPE, F.coalesce(codes[F.col(S.EVENT_TYPE)], F.col(S.EVENT_TYPE)))
    if src.emit:
        types = F.array(*[F.lit(t) for t in src.emit])
        mapped = (
            mapped.withColumn("_emit", F.explode(types))
            .withColumn(
                S.EVENT_ID, F.when(F.col(S.EVENT_ID).isNotNull(), F.concat_ws(":", S.EVENT_ID, "_emit"))
            )
            .withColumn(S.EVENT_TYPE, F.col("_emit"))
            .drop("_emit")
        )
    return mapped
