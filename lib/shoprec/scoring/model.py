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
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

from shoprec import schemas as S
from shoprec.training import ranker as rk

log = logging.getLogger(__name__)
_LOADED: dict[str, Any] = {}
LOADER_PID = "_loader_pid"
#: The per-user array of candidate structs :func:`score` reads, and each candidate's item row.
CANDIDATES, ITEM_INDEX = "_candidates", "_item_index"


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


def predict(
    model: Any,
    users: NDArray[Any],
    items: NDArray[Any],
    feats: NDArray[Any],
    batch: int,
    user_rows: NDArray[Any] | None = None,
    item_rows: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """``(n, 2)`` probabilities (click, purchase), one row per row of ``feats``.

    Pair ``i`` is user ``user_rows[i]`` of ``users`` and item ``item_rows[i]`` of ``items`` (or row
    ``i`` of each without them): the vectors are gathered one batch at a time, so a user's vector
    and the item matrix are never repeated per pair in memory. Torch gathers them
    (``index_select``, on the model's threads; numpy's row indexing, single-threaded, made the
    loop about a third slower on 2 cores)."""
    import torch

    from shoprec.evaluation.retrieval import tensor

    device = next(model.parameters()).device
    u_all, v_all, f_all = tensor(users), tensor(items), tensor(feats)
    u_rows, v_rows = (
        None if r is None else torch.from_numpy(np.asarray(r, dtype=np.int64)) for r in (user_rows, item_rows)
    )
    out = []
    with torch.inference_mode():
        for start in range(0, len(feats), batch):
            sl = slice(start, start + batch)
            u = u_all[sl] if u_rows is None else u_all.index_select(0, u_rows[sl])
            v = v_all[sl] if v_rows is None else v_all.index_select(0, v_rows[sl])
            logits = model(u.to(device), v.to(device), f_all[sl].to(device))
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)


def item_feature_matrix(items: DataFrame, ids: NDArray[Any]) -> NDArray[Any]:
    """Each item's :data:`~shoprec.training.ranker.ITEM_FEATURE_NAMES` values in row ``i`` for
    item ``ids[i]`` (the item matrix's rows; zeros for an id ``items`` lacks), to broadcast."""
    import pandas as pd

    pdf = rk.item_features(items).toPandas()
    out = np.zeros((len(ids), len(rk.ITEM_FEATURE_NAMES)), dtype=np.float32)
    rows = pd.Index(ids).get_indexer(pdf[S.ITEM_ID])
    found = rows >= 0
    if found.any():
        out[rows[found]] = np.stack(pdf[rk.ITEM_FEATURES][found].to_numpy())
    return out


def candidate_struct(fields: list[str]) -> Column:
    """The per-user candidate list :func:`score` reads: ``fields`` of each pair (two of them
    :data:`ITEM_INDEX` and ``features``) collected into one sorted array per user."""
    return F.sort_array(F.collect_list(F.struct(*fields))).alias(CANDIDATES)


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
    """One row per (user, candidate) with ``p_click``, ``p_purchase`` and the pid of the process
    that scored it (``_loader_pid``, for checks).

    ``df`` has one row per user: ``user_key``, ``user_vector`` and ``_candidates``, an array of
    structs holding :data:`ITEM_INDEX` (the item's row in ``item_matrix``, a Spark broadcast of
    the item vectors), ``features`` (the pair's :data:`~shoprec.training.ranker.PAIR_FEATURE_NAMES`)
    plus any fields to pass through; the output has ``user_key``, the item's row, the other fields
    (not ``features``) and the heads. ``item_features`` is a broadcast ``(items,
    len(ITEM_FEATURE_NAMES))`` matrix in the rows of ``item_matrix``
    (:func:`shoprec.training.ranker.item_features`): the task completes each pair's features from
    its item's row. Each user's vector crosses from the JVM once, not once per candidate, and item
    vectors and features not at all: a pair costs its index and 4 floats instead of two vectors
    (3 KiB at 384 dimensions) and 12 features, and the features do not come back.
    ``loads``, a Spark accumulator, counts how many times a ranker was loaded.
    """
    rk.load(model_dir, student)  # fail on the driver, with a clear message, if it is missing
    element = df.schema[CANDIDATES].dataType.elementType  # type: ignore[attr-defined]
    passed = [f for f in element.fields if f.name not in (ITEM_INDEX, rk.FEATURES)]
    index_field = StructField(ITEM_INDEX, IntegerType(), False)
    schema = StructType(
        [
            df.schema[S.USER_KEY],
            index_field,
            *passed,
            StructField(rk.P_CLICK, FloatType(), False),
            StructField(rk.P_PURCHASE, FloatType(), False),
            StructField(LOADER_PID, IntegerType(), False),
        ]
    )
    names = [S.USER_KEY, ITEM_INDEX, *[f.name for f in passed], rk.P_CLICK, rk.P_PURCHASE, LOADER_PID]
    # users per slice: bounds the pairs (and gathered vectors) held at once whatever Spark's batch
    pairs_per_slice = max(batch_size * 8, 1)

    def run(batches: Iterable[Any]) -> Iterable[Any]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import torch

        from shoprec.evaluation.retrieval import vectors_of

        torch.set_num_threads(threads)
        model, loaded_now = cached_ranker(model_dir, student)
        if loaded_now and loads is not None:
            loads.add(1)
        matrix = item_matrix.value
        item_feats = item_features.value
        pid = os.getpid()
        for batch in batches:
            lengths = pc.list_value_length(batch.column(CANDIDATES)).to_numpy(zero_copy_only=False)
            lengths = np.nan_to_num(lengths.astype(np.float64)).astype(np.int64)
            start = 0
            while start < batch.num_rows:
                # as many users as fit pairs_per_slice (at least one)
                ends = np.cumsum(lengths[start:])
                stop = start + max(1, int(np.searchsorted(ends, pairs_per_slice, side="right")))
                part = batch.slice(start, stop - start)
                start = stop
                lists = part.column(CANDIDATES)
                parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
                flat = lists.flatten()  # the structs of this slice's pairs, offsets applied
                children = dict(zip([f.name for f in element.fields], flat.flatten(), strict=True))
                users = vectors_of(
                    part.column(part.schema.get_field_index(rk.USER_VECTOR)), "scoring: user_vector"
                )
                rows = children[ITEM_INDEX].to_numpy(zero_copy_only=False).astype(np.int64)
                pair_feats = vectors_of(children[rk.FEATURES], "scoring: features")
                feats = rk.full_features(pair_feats, item_feats[rows])
                probs = predict(model, users, matrix, feats, batch_size, parents, rows)
                yield pa.RecordBatch.from_arrays(
                    [
                        part.column(S.USER_KEY).take(pa.array(parents)),
                        children[ITEM_INDEX].cast(pa.int32()),
                        *[children[f.name] for f in passed],
                        pa.array(probs[:, 0].astype(np.float32)),
                        pa.array(probs[:, 1].astype(np.float32)),
                        pa.array(np.full(len(rows), pid, dtype=np.int32)),
                    ],
                    names=names,
                )

    return df.select(S.USER_KEY, rk.USER_VECTOR, CANDIDATES).mapInArrow(run, schema)
