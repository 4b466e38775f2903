"""The text a user tower reads: one function, so training, evaluation and serving see the same.

A user is rendered as ``"recently: <newest title>; <next>; ..."`` from their last ``n`` items; an
item without a title (absent from the split's catalog) is left out, not rendered as an empty entry.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S

PREFIX, TEXT = "recently: ", "text"


def recent_titles(histories: DataFrame, key: str, items: str, titles: DataFrame, n: int) -> DataFrame:
    """``(key, text)`` for each row of ``histories`` whose ``items`` array (oldest first) names at
    least one item; ``titles`` is ``(item_id, title)``."""
    return (
        histories.select(key, F.posexplode(F.reverse(items)).alias("_pos", S.ITEM_ID))
        .where(F.col("_pos") < n)
        .join(titles.select(S.ITEM_ID, S.TITLE), S.ITEM_ID, "left")
        .groupBy(key)
        .agg(F.array_sort(F.collect_list(F.struct("_pos", S.TITLE))).alias("_t"))
        .select(
            key,
            F.concat(F.lit(PREFIX), F.concat_ws("; ", F.transform("_t", lambda t: t[S.TITLE]))).alias("text"),
        )
    )


def history_texts(
    items: DataFrame, sequences: DataFrame, profiles: DataFrame | None, history_items: int
) -> DataFrame:
    """``(user_key, text)`` from the users' behaviour sequences and item titles, then (optionally)
    their profile text."""
    recent = recent_titles(sequences, S.USER_KEY, S.ITEMS, items, history_items)
    if profiles is None:
        return recent
    return recent.join(profiles.select(S.USER_KEY, S.PROFILE_TEXT), S.USER_KEY, "full_outer").select(
        S.USER_KEY, F.concat_ws(". ", "text", S.PROFILE_TEXT).alias("text")
    )
