"""Petastorm reads a Delta table's current snapshot into PyTorch batches, in two shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec.training.data import SnapshotNotReadableError, make_loader, make_reader, snapshot_files

pytestmark = pytest.mark.spark


def _read_all(files: list[str], shard: int, shards: int) -> list[int]:
    ids: list[int] = []
    with make_reader(files, fields=["row_id", "label"], shard=shard, shard_count=shards) as reader:
        for batch in make_loader(reader, batch_size=16):
            assert isinstance(batch["row_id"], torch.Tensor)
            ids.extend(int(i) for i in batch["row_id"])
    return ids


def test_two_shards_read_the_current_snapshot_exactly_once(spark: SparkSession, tmp_path: Path) -> None:
    loc = str(tmp_path / "train")
    df = spark.range(0, 400).select(
        F.col("id").alias("row_id"), (F.col("id") % 2).cast("float").alias("label")
    )
    df.repartition(4).write.format("delta").save(loc)
    # A later version deletes rows 0-99: Delta rewrites the files holding them.
    delta.for_location(spark, loc).delete("row_id < 100")
    old_files = set(spark.read.format("delta").option("versionAsOf", 0).load(loc).inputFiles())

    files = snapshot_files(spark, loc)
    assert len(files) >= 2
    assert set(files) - old_files, "the delete wrote new files"
    assert old_files - set(files), "and removed old ones from the snapshot"
    shard0, shard1 = _read_all(files, 0, 2), _read_all(files, 1, 2)
    assert shard0 and shard1, "each shard gets part of the data"
    assert not set(shard0) & set(shard1)
    got = sorted(shard0 + shard1)
    assert got == list(range(100, 400)), "every row of the snapshot once, none that the delete removed"
    assert np.all(np.array(got) >= 100)


def test_deletion_vectors_are_refused(spark: SparkSession, tmp_path: Path) -> None:
    loc = str(tmp_path / "dv")
    spark.range(10).write.format("delta").option("delta.enableDeletionVectors", "true").save(loc)
    with pytest.raises(SnapshotNotReadableError, match="deletion vectors"):
        snapshot_files(spark, loc)
