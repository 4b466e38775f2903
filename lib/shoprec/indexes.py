"""Dense integer indexes for keys, and a check that no query ran a window as one task.

ALS and the token tables need users and items numbered 0..n-1. ``dense_rank()`` over a window
with no partition does that by moving every row to one task (Spark warns "No Partition Defined
for Window operation"): harmless on the demo, one task for every user of a real shop. Here the
keys are range-partitioned and sorted by Spark's own sort, each row takes its position within its
partition, and a table of partition sizes (one row per partition, collected) turns positions into
global ones: the same numbers ``dense_rank`` gives (keys in ascending order from 0), computed by
as many tasks as the sort has partitions.
"""

from __future__ import annotations

import re
from itertools import accumulate

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

#: ``monotonically_increasing_id`` keeps the partition id in the upper 31 bits and the row's
#: position within its partition in the lower 33.
_POSITION_BITS = 33


def dense_index(frame: DataFrame, key: str, name: str) -> DataFrame:
    """``(key, name)``: each distinct non-null ``key`` of ``frame`` numbered 0..n-1 in ascending
    key order (ties impossible: keys are distinct), the same for the same keys on every run and
    for any partitioning of ``frame``. The result is checkpointed: its numbers never change
    under later re-evaluation."""
    ordered = (
        frame.select(key)
        .where(F.col(key).isNotNull())
        .distinct()
        .orderBy(key)
        .select(
            key,
            F.spark_partition_id().alias("_p"),
            F.monotonically_increasing_id().alias("_m"),
        )
        .localCheckpoint()
    )
    sizes = sorted(
        (r["_p"], r["_n"]) for r in ordered.groupBy("_p").agg(F.count(F.lit(1)).alias("_n")).collect()
    )
    spark = frame.sparkSession
    starts = [0, *accumulate(n for _, n in sizes)][:-1]
    offsets = spark.createDataFrame(
        [(p, start) for (p, _), start in zip(sizes, starts, strict=True)], "_p INT, _o LONG"
    )
    position = F.col("_m") - F.shiftleft(F.col("_p").cast("long"), _POSITION_BITS)
    return (
        ordered.join(F.broadcast(offsets), "_p")
        .select(key, (F.col("_o") + position).alias(name))
        .localCheckpoint()
    )


def last_execution(spark: SparkSession) -> int:
    """The id of the newest SQL execution Spark has recorded (-1 before any): the mark from which
    :func:`single_partition_windows` reads."""
    executions = spark._jsparkSession.sharedState().statusStore().executionsList()
    return max((executions.apply(i).executionId() for i in range(executions.size())), default=-1)


def single_partition_windows(spark: SparkSession, after: int) -> list[str]:
    """Every window operator without a partitioning (one task over all its rows) in the physical
    plans of the SQL executions after ``after`` (:func:`last_execution`), as "description:
    arguments". Read from Spark's SQL status store (what the UI's SQL tab shows), so it sees every
    query a stage ran, including those inside library calls."""
    executions = spark._jsparkSession.sharedState().statusStore().executionsList()
    found: list[str] = []
    ids = []
    for i in range(executions.size()):
        e = executions.apply(i)
        ids.append(e.executionId())
        if e.executionId() <= after:
            continue
        lines = e.physicalPlanDescription().splitlines()
        for n, line in enumerate(lines):
            if _WINDOW.match(line):
                arguments = next((x for x in lines[n + 1 : n + 4] if x.startswith("Arguments:")), "")
                if any(not _partitioned(spec) for spec in _window_specs(arguments)):
                    entry = f"{e.description()}: {arguments[:300]}"
                    if entry not in found:  # the final and the initial plan both list it
                        found.append(entry)
    if ids and after >= 0 and min(ids) > after + 1:
        raise RuntimeError(
            f"Spark kept executions from {min(ids)} only, not from {after + 1}: "
            "raise spark.sql.ui.retainedExecutions to check them all"
        )
    return found


#: A window operator's header in Spark's formatted plan, "(12) Window" (not WindowGroupLimit,
#: which always sits below a Window with the same partitioning).
_WINDOW = re.compile(r"^\(\d+\) Window( |$)")


def _window_specs(arguments: str) -> list[str]:
    """The inside of each ``windowspecdefinition(...)`` in a plan line."""
    specs = []
    start = arguments.find("windowspecdefinition(")
    while start >= 0:
        i = start + len("windowspecdefinition(")
        depth, j = 1, i
        while j < len(arguments) and depth:
            depth += {"(": 1, ")": -1}.get(arguments[j], 0)
            j += 1
        specs.append(arguments[i : j - 1])
        start = arguments.find("windowspecdefinition(", j)
    return specs


def _partitioned(spec: str) -> bool:
    """Whether a window spec's first argument is a partition expression: Spark prints the
    partition expressions first, then the order (with ASC/DESC), then the frame."""
    depth = 0
    for j, ch in enumerate(spec):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            first = spec[:j]
            break
    else:
        first = spec
    first = first.strip()
    return not (first.startswith("specifiedwindowframe") or " ASC" in first or " DESC" in first)
