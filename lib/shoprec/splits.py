"""What a split may see: the interactions before its cut, the same for every stage that reads one.

A model fitted or judged on a split must see only what was known before that split's held-out
events: everything before the global cut in ``time`` mode, and before each user's own earliest
target in ``leave_last_out`` mode (users without a target of the split see everything).
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S


def visible(interactions: DataFrame, mode: str, as_of: datetime, examples: DataFrame) -> DataFrame:
    """``interactions`` a split with ``examples`` (its held-out targets) and cut ``as_of`` may see."""
    if mode == "time":
        return interactions.where(F.col(S.EVENT_TIME) < F.lit(as_of))
    cut = examples.groupBy(S.USER_KEY).agg(F.min(S.TARGET_TIME).alias("_cut"))
    return (
        interactions.join(cut, S.USER_KEY, "left")
        .where(F.col("_cut").isNull() | (F.col(S.EVENT_TIME) < F.col("_cut")))
        .drop("_cut")
    )
