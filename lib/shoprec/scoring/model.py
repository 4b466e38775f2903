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
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

from shoprec.training import ranker as rk

log = logging.getLogger(__name__)
_LOADED: dict[str, Any] = {}
LOADER_PID = "_loader_pid"


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
    model: Any, users: NDArray[Any], items: NDArray[Any], feats: NDArray[Any], batch: int
) -> NDArray[Any]:
    """``(n, 2)`` probabilities (click, purchase) for stacked inputs."""
    import torch

    from shoprec.evaluation.retrieval import tensor

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(users), batch):
            sl = slice(start, start + batch)
            logits = model(
                tensor(users[sl]).to(device), tensor(items[sl]).to(device), tensor(feats[sl]).to(device)
            )
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)


def score(
    df: DataFrame,
    model_dir: str,
    student: bool = False,
    batch_size: int = 4096,
    threads: int = 1,
    loads: Any = None,
) -> DataFrame:
    """``df`` (with ``user_vector``, ``item_vector``, ``features``) plus ``p_click``, ``p_purchase``
    and the pid of the process that scored the row (``_loader_pid``, for checks). ``loads``, a Spark
    accumulator, counts how many times a ranker was loaded."""
    rk.load(model_dir, student)  # fail on the driver, with a clear message, if it is missing
    schema = StructType(
        [
            *df.schema.fields,
            StructField(rk.P_CLICK, FloatType(), False),
            StructField(rk.P_PURCHASE, FloatType(), False),
            StructField(LOADER_PID, IntegerType(), False),
        ]
    )

    def run(batches: Iterable[Any]) -> Iterable[Any]:
        import pyarrow as pa
        import torch

        from shoprec.evaluation.retrieval import vectors_of

        torch.set_num_threads(threads)
        model, loaded_now = cached_ranker(model_dir, student)
        if loaded_now and loads is not None:
            loads.add(1)
        pid = os.getpid()
        for batch in batches:
            # the vectors' Arrow buffers are the model's input matrices; the batch passes through
            # untouched with three columns added (pandas would box every vector into an object)
            users, items, feats = (
                vectors_of(batch.column(batch.schema.get_field_index(name)), f"scoring: {name}")
                for name in (rk.USER_VECTOR, rk.ITEM_VECTOR, rk.FEATURES)
            )
            probs = predict(model, users, items, feats, batch_size)
            yield pa.RecordBatch.from_arrays(
                [
                    *batch.columns,
                    pa.array(probs[:, 0].astype(np.float32)),
                    pa.array(probs[:, 1].astype(np.float32)),
                    pa.array(np.full(batch.num_rows, pid, dtype=np.int32)),
                ],
                names=[*batch.schema.names, rk.P_CLICK, rk.P_PURCHASE, LOADER_PID],
            )

    return df.mapInArrow(run, schema)
