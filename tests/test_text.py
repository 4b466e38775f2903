"""The user tower's text: training, evaluation and serving render a history the same way."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from shoprec import schemas as S
from shoprec.modeling.text import history_texts
from shoprec.training.prepare import USER_TEXT, texts

pytestmark = pytest.mark.spark


def test_a_history_item_missing_from_the_catalog_is_left_out_in_training_and_in_serving(
    spark: SparkSession,
) -> None:
    items = spark.createDataFrame(
        [("a", "Apple", "Apple text"), ("c", "Cherry", "Cherry text"), ("p", "Pear", "Pear text")],
        f"{S.ITEM_ID} string, {S.TITLE} string, {S.ITEM_TEXT} string",
    )
    history = ["a", "gone", "c"]  # oldest first; "gone" is not in this split's catalog
    examples = spark.createDataFrame(
        [(0, history, "p")], f"_row int, {S.HISTORY_ITEMS} array<string>, {S.POSITIVE_ITEM} string"
    )
    sequences = spark.createDataFrame([("u1", history)], f"{S.USER_KEY} string, {S.ITEMS} array<string>")
    trained_on = texts(examples, items, history_items=8).first()[USER_TEXT]  # type: ignore[index]
    served = history_texts(items, sequences, None, history_items=8).first()["text"]  # type: ignore[index]
    assert trained_on == served == "recently: Cherry; Apple"
    # only the newest n are read, in both
    short = texts(examples, items, history_items=2).first()[USER_TEXT]  # type: ignore[index]
    assert short == history_texts(items, sequences, None, 2).first()["text"] == "recently: Cherry"  # type: ignore[index]
