"""Delta tables → PyTorch batches through Petastorm, sharded across training processes.

Petastorm reads Parquet files; a Delta table is Parquet files plus a log that says which of them
make up the current snapshot. We ask Delta for the snapshot's files and hand exactly those to
Petastorm, so files that later versions removed are never read, and no copy of the data is made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from shoprec import delta
from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)


class SnapshotNotReadableError(ShoprecError):
    """The table uses a Delta feature that plain Parquet readers (Petastorm) would get wrong."""


def snapshot_files(spark: SparkSession, location: str, partition: dict[str, str] | None = None) -> list[str]:
    """The Parquet files of the table's current snapshot, as URLs Petastorm can open; with
    ``partition``, only the files of that partition (``{"split": "train"}``).

    Raises:
        SnapshotNotReadableError: the table has deletion vectors or column mapping enabled, which
            a Parquet reader cannot apply (rows would come back that Delta considers deleted).
    """
    props = delta.properties(spark, location)
    if props.get("delta.enableDeletionVectors", "false").lower() == "true":
        raise SnapshotNotReadableError(
            f"{location}: deletion vectors are enabled; run REORG TABLE ... APPLY (PURGE) and disable them "
            "(ALTER TABLE ... SET TBLPROPERTIES ('delta.enableDeletionVectors' = false)) before training"
        )
    if props.get("delta.columnMapping.mode", "none") != "none":
        raise SnapshotNotReadableError(f"{location}: column mapping is enabled; Petastorm cannot read it")
    files = sorted(delta.read(spark, location).inputFiles())
    for column, value in (partition or {}).items():
        files = [f for f in files if f"/{column}={value}/" in f]
    log.info("%s: current snapshot has %d files", location, len(files))
    return files


def make_reader(
    files: Sequence[str],
    fields: Sequence[str] | None = None,
    shard: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = 1,
    shuffle: bool = False,
    seed: int = 0,
) -> Any:
    """Petastorm batch reader over ``files``; shard k of ``shard_count`` reads only its row groups.

    Uses Petastorm's ``dummy`` pool (row groups decoded in the calling thread). Its ``thread`` pool
    in 0.13.x can end an epoch before it starts: ``get_results`` sees "no work ventilated yet"
    and, a moment later, "ventilation complete", and stops with nothing read. A shard with one or
    two row groups hit this in CI (a whole rank's epoch silently empty). Our rows are small token
    arrays, so decoding in the training thread costs little (``bench/training.py`` measures it).
    """
    from petastorm import make_batch_reader

    from shoprec.console import quiet_petastorm

    quiet_petastorm()  # in each rank: its warnings are about pyarrow's API, not the user's data
    reader = make_batch_reader(
        list(files),
        schema_fields=list(fields) if fields else None,
        cur_shard=shard,
        shard_count=shard_count,
        num_epochs=num_epochs,
        shuffle_row_groups=shuffle,
        seed=seed,
        reader_pool_type="dummy",
    )
    from petastorm.local_disk_cache import LocalDiskCache

    if not isinstance(reader.cache, LocalDiskCache):
        # Petastorm prints "Cache cleanup complete." to stdout when a reader closes, from every
        # rank at every epoch, even with no cache to clean: nothing to clean, nothing to say
        reader.cleanup_cache = lambda: None
    return reader


def make_loader(reader: Any, batch_size: int) -> Any:
    """A PyTorch-style loader of dict batches (tensors) over a Petastorm reader."""
    from petastorm.pytorch import BatchedDataLoader

    return BatchedDataLoader(reader, batch_size=batch_size)
