"""The ranker inside Spark tasks: loaded once per Python worker process, run in batches.

Spark reuses Python workers between tasks (``spark.python.worker.reuse``, on by default), so a
module-level cache keyed by path keeps one ranker per process however many batches and tasks
pass through it. Inference runs under ``torch.inference_mode`` in batches of
``scoring.batch_size`` rows with ``scoring.threads`` torch threads (one per task core), on the
executor's GPU when it has one.

Batches are Arrow record batches (``mapInArrow``), not pandas frames: a vector column's values
buffer already is the ``(rows, dim)`` matrix the model reads, where pandas would box each row's
vector into an object to stack again (that cost the old pandas UDF 98% of its time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StructField, StructType

from shoprec import schemas as S
from shoprec.errors import ShoprecError
from shoprec.modeling import ranker as rk

log = logging.getLogger(__name__)
_LOADED: dict[str, Any] = {}
LOADER_PID = "_loader_pid"
#: Each candidate's item row (in the item matrix), an array per user in :func:`score`'s input.
ITEM_INDEX = "_item_index"


def cached_ranker(path: str, student: bool) -> tuple[Any, bool]:
    """``(model, loaded_now)``: the process's ranker for ``path``, loading it on first use."""
    import torch

    key = f"{path}|{student}"
    if key in _LOADED:
        return _LOADED[key], False
    saved = rk.load(path, student)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    _LOADED[key] = saved.model.to(device)
    log.info("ranker loaded from %s in process %d (%s)", path, os.getpid(), device)
    return _LOADED[key], True


def item_feature_matrix(items: DataFrame, ids: NDArray[Any]) -> NDArray[Any]:
    """Each item's :data:`~shoprec.modeling.ranker.ITEM_FEATURE_NAMES` values in row ``i`` for
    item ``ids[i]`` (the item matrix's rows; zeros for an id ``items`` lacks), to broadcast."""
    import pandas as pd

    pdf = rk.item_features(items).toPandas()
    out = np.zeros((len(ids), len(rk.ITEM_FEATURE_NAMES)), dtype=np.float32)
    rows = pd.Index(ids).get_indexer(pdf[S.ITEM_ID])
    found = rows >= 0
    if found.any():
        out[rows[found]] = np.stack(pdf[rk.ITEM_FEATURES][found].to_numpy())
    return out


def group_candidates(pairs: DataFrame) -> DataFrame:
    """One row per user of ``pairs`` (``user_key``, :data:`ITEM_INDEX`, ``_pair_code``): the
    layout :func:`score` reads, each an array over the user's candidates, in item-row order so
    batches are the same on every run.

    Flat primitive arrays, not an array of structs: Spark's JVM converts them to Arrow and back
    about twice as fast (the JVM's share was what kept the UDF from the bare loop's speed)."""
    c = "_c"
    grouped = pairs.groupBy(S.USER_KEY).agg(
        F.sort_array(F.collect_list(F.struct(ITEM_INDEX, rk.PAIR_CODE))).alias(c)
    )
    return grouped.select(
        S.USER_KEY, F.col(c)[ITEM_INDEX].alias(ITEM_INDEX), F.col(c)[rk.PAIR_CODE].alias(rk.PAIR_CODE)
    )


def _shares(part: Any, name: str) -> tuple[NDArray[Any], NDArray[Any]]:
    """A list column of ``part`` as ``(values, offsets)`` (a null list: no entries)."""
    col = part.column(part.schema.get_field_index(name))
    offsets = col.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def _aligned(part: Any, rows: Any, name: str) -> Any:
    """Column ``name`` of ``part``, flattened, after checking each user has one value per
    candidate (a misaligned list names its user, not a shape error deep in numpy)."""
    import pyarrow.compute as pc

    col = part.column(part.schema.get_field_index(name))
    ok = pc.equal(pc.list_value_length(col), pc.list_value_length(rows))
    if col.null_count or not pc.all(ok).as_py():
        bad = int(np.flatnonzero(~pc.fill_null(ok, False).to_numpy(zero_copy_only=False))[0])
        user = part.column(part.schema.get_field_index(S.USER_KEY))[bad].as_py()
        values = col[bad].as_py()
        raise ShoprecError(
            f"scoring: user {user!r}: {name} holds {'no' if values is None else len(values)} values "
            f"for {len(rows[bad].as_py() or [])} candidates (one per candidate expected)"
        )
    return col.flatten()


def score(
    df: DataFrame,
    model_dir: str,
    item_matrix: Any,
    student: bool = False,
    batch_size: int = 4096,
    threads: int = 1,
    loads: Any = None,
    *,
    item_features: Any,
) -> DataFrame:
    """One row per (user, candidate): ``user_key``, :data:`ITEM_INDEX`, the pair's code,
    ``p_click``, ``p_purchase`` and the pid of the process that scored it (``_loader_pid``, for
    checks).

    ``df`` has one row per user: ``user_key``, ``user_vector``, the user's
    :data:`~shoprec.modeling.ranker.CATEGORY_SHARES` and ``BRAND_SHARES``
    (:func:`~shoprec.modeling.ranker.profile_shares`) and, one value per candidate
    (:func:`group_candidates`), :data:`ITEM_INDEX` (the item's row in ``item_matrix``, a Spark
    broadcast of the item vectors) and :data:`~shoprec.modeling.ranker.PAIR_CODE` (the pair's
    features, :func:`~shoprec.modeling.ranker.pair_codes`; its low bits are the caller's and come
    back unchanged). ``item_features`` is a broadcast ``(items, len(ITEM_FEATURE_NAMES))`` matrix
    in the rows of ``item_matrix``: each batch completes its pairs' features from their items'
    rows. Each user's vector and shares cross from the JVM once, not once per candidate, and item
    vectors and features not at all: a pair costs two ints instead of two vectors (3 KiB at 384
    dimensions) and 12 features. ``loads``, a Spark accumulator, counts how many times a ranker
    was loaded.
    """
    rk.load(model_dir, student)  # fail on the driver, with a clear message, if it is missing
    for name in (ITEM_INDEX, rk.PAIR_CODE, rk.CATEGORY_SHARES, rk.BRAND_SHARES):
        if name not in df.columns or not isinstance(df.schema[name].dataType, ArrayType):
            raise ShoprecError(
                f"scoring: the ranker's input needs an array column {name}; it has {df.columns}"
            )
    schema = StructType(
        [
            df.schema[S.USER_KEY],
            StructField(ITEM_INDEX, IntegerType(), False),
            StructField(rk.PAIR_CODE, IntegerType(), False),
            StructField(rk.P_CLICK, FloatType(), False),
            StructField(rk.P_PURCHASE, FloatType(), False),
            StructField(LOADER_PID, IntegerType(), False),
        ]
    )
    names = schema.fieldNames()
    # users per slice: bounds the pairs (and gathered vectors) held at once whatever Spark's batch
    pairs_per_slice = max(batch_size * 8, 1)

    def run(batches: Iterable[Any]) -> Iterable[Any]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import torch

        from shoprec.modeling.retrieval import vectors_of

        torch.set_num_threads(threads)
        model, loaded_now = cached_ranker(model_dir, student)
        if loaded_now and loads is not None:
            loads.add(1)
        matrix = item_matrix.value
        item_feats = item_features.value
        pid = os.getpid()
        for batch in batches:
            lengths = pc.list_value_length(batch.column(ITEM_INDEX)).to_numpy(zero_copy_only=False)
            lengths = np.nan_to_num(lengths.astype(np.float64)).astype(np.int64)
            start = 0
            while start < batch.num_rows:
                # as many users as fit pairs_per_slice (at least one)
                ends = np.cumsum(lengths[start:])
                stop = start + max(1, int(np.searchsorted(ends, pairs_per_slice, side="right")))
                part = batch.slice(start, stop - start)
                start = stop
                lists = part.column(ITEM_INDEX)
                parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
                index = lists.flatten()  # this slice's pairs, offsets applied
                users = vectors_of(
                    part.column(part.schema.get_field_index(rk.USER_VECTOR)), "scoring: user_vector"
                )
                rows = index.to_numpy(zero_copy_only=False).astype(np.int64)
                codes = _aligned(part, lists, rk.PAIR_CODE)
                try:
                    pair_feats = rk.decode_pair_features(
                        codes.to_numpy(zero_copy_only=False),
                        parents,
                        _shares(part, rk.CATEGORY_SHARES),
                        _shares(part, rk.BRAND_SHARES),
                    )
                except rk.PairCodeError as e:
                    user = part.column(S.USER_KEY)[e.user].as_py()
                    raise ShoprecError(f"scoring: user {user!r}: {e}") from None
                probs = rk.predict(model, users, matrix, pair_feats, batch_size, parents, rows, item_feats)
                yield pa.RecordBatch.from_arrays(
                    [
                        part.column(S.USER_KEY).take(pa.array(parents)),
                        index.cast(pa.int32()),
                        codes,
                        pa.array(probs[:, 0].astype(np.float32)),
                        pa.array(probs[:, 1].astype(np.float32)),
                        pa.array(np.full(len(rows), pid, dtype=np.int32)),
                    ],
                    names=names,
                )

    columns = [S.USER_KEY, rk.USER_VECTOR, ITEM_INDEX, rk.PAIR_CODE, rk.CATEGORY_SHARES, rk.BRAND_SHARES]
    return df.select(*columns).mapInArrow(run, schema)
