"""shoprec's sequence retriever as part of a trained model: a candidate source and a ranking signal.

The network is :mod:`shoprec.modeling.sasrec` over the items' text vectors from the fine-tuned item
tower (plus an ID embedding and time gaps): a causal transformer reads the user's items in order
and its last hidden state scores every item. ``shoprec train`` fits it on the sequences the
validation cut can see and saves it beside the retriever (``<model>/sequence/``); the candidate
generator then proposes its top items (source ``sequence``) and the learning-to-rank model reads
its score for every pair (``sequence_dot``), including pairs no source proposed. Users are encoded
in Spark tasks from their interactions (one copy of the network per Python worker).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from shoprec import schemas as S

log = logging.getLogger(__name__)

SEQUENCE_DIR, WEIGHTS, META = "sequence", "sequence.pt", "sequence.json"
VECTOR = "vector"


def fold(
    rows: pd.DataFrame, index: dict[str, int]
) -> tuple[list[str], list[NDArray[np.int64]], list[NDArray[np.int64]]]:
    """Per user of ``rows`` (``user_key, item_id, event_time``), their items in time order as
    indices of ``index`` (ties by item id; items it lacks dropped; repeats in a row folded into one
    step: a view, a cart and a purchase of one item are one step) and each step's time-gap bucket."""
    rows = rows[rows[S.ITEM_ID].isin(index)].sort_values([S.USER_KEY, S.EVENT_TIME, S.ITEM_ID], kind="stable")
    users: list[str] = []
    sequences: list[NDArray[np.int64]] = []
    gaps: list[NDArray[np.int64]] = []
    if rows.empty:
        return users, sequences, gaps
    items = rows[S.ITEM_ID].to_numpy(dtype=object)
    secs = pd.to_datetime(rows[S.EVENT_TIME]).astype("int64").to_numpy() // 10**9
    keys = rows[S.USER_KEY].to_numpy(dtype=object)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    ends = np.concatenate([starts[1:], [len(keys)]])
    for a, b in zip(starts, ends, strict=True):
        seq, gap = _steps(items[a:b], secs[a:b], index)
        users.append(str(keys[a]))
        sequences.append(seq)
        gaps.append(gap)
    return users, sequences, gaps


@dataclass(frozen=True)
class SequenceModel:
    model: Any  # shoprec.modeling.sasrec.SASRec
    ids: list[str]  # index i + 1 is ids[i]
    spec: dict[str, Any]

    @property
    def index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.ids)}

    def item_vectors(self, spark: SparkSession) -> DataFrame:
        """``(item_id, vector)``: what a user's state is scored against."""
        return spark.createDataFrame(self.item_table, f"{S.ITEM_ID} string, {VECTOR} array<float>")

    @functools.cached_property
    def item_table(self) -> pd.DataFrame:
        """:meth:`item_vectors` as pandas, computed once per model object (:func:`loaded` keeps
        one per saved model, so a caller that scores often embeds the catalog once)."""
        from shoprec.modeling import sasrec as sr

        vectors = sr.item_vectors(self.model)
        return pd.DataFrame({S.ITEM_ID: self.ids, VECTOR: [v.tolist() for v in vectors]})

    def user_vectors(self, interactions: DataFrame, path: str) -> DataFrame:
        """``(user_key, vector)`` for every user in ``interactions`` with an item the model knows,
        encoded in Spark tasks by the model saved at ``path`` (each user's rows in one task)."""
        schema = StructType(
            [StructField(S.USER_KEY, StringType(), False), StructField(VECTOR, ArrayType(FloatType()), False)]
        )

        def run(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
            from shoprec.modeling import sasrec as sr

            loaded = _cached(path)
            index = loaded.index
            for batch in batches:
                users, sequences, gaps = [], [], []
                for user, items, times in zip(
                    batch[S.USER_KEY], batch["_items"], batch["_times"], strict=True
                ):
                    seq, gap = _steps(
                        np.asarray(items, dtype=object), np.asarray(times, dtype=np.int64), index
                    )
                    if len(seq):
                        users.append(user)
                        sequences.append(seq)
                        gaps.append(gap)
                if not users:
                    continue
                vectors = sr.encode(loaded.model, sequences, gaps if loaded.spec.get("time_gaps") else None)
                yield pd.DataFrame({S.USER_KEY: users, VECTOR: [v.tolist() for v in vectors]})

        # one row per user, the history in time order (ties by item id, as :func:`fold`: by the whole
        # timestamp, not its seconds, or two steps within one second could swap)
        steps = F.sort_array(
            F.collect_list(F.struct(S.EVENT_TIME, S.ITEM_ID, F.unix_timestamp(S.EVENT_TIME).alias("t")))
        )
        histories = interactions.groupBy(S.USER_KEY).agg(steps.alias("_h"))
        return histories.select(
            S.USER_KEY,
            F.transform("_h", lambda x: x[S.ITEM_ID]).alias("_items"),
            F.transform("_h", lambda x: x["t"]).alias("_times"),
        ).mapInPandas(run, schema)


def _steps(
    items: NDArray[Any], seconds: NDArray[np.int64], index: dict[str, int]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """One user's time-ordered items as model indices (unknown items dropped, repeats in a row
    folded) and each step's time-gap bucket."""
    from shoprec.modeling import sasrec as sr

    known = np.array([i in index for i in items], dtype=bool)
    if not known.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    seq = np.array([index[i] for i in items[known]], dtype=np.int64)
    t = seconds[known]
    keep = np.concatenate([[True], seq[1:] != seq[:-1]])
    seq, t = seq[keep], t[keep]
    return seq, sr.gap_buckets(np.concatenate([[0], np.diff(t)]))


def fit(
    rows: pd.DataFrame, ids: list[str], text: NDArray[np.float32], spec: Any
) -> tuple[SequenceModel, dict[str, Any]]:
    """Train on the users' interactions in ``rows`` (``user_key, item_id, event_time``) over the
    items ``ids`` (row i of ``text`` is ``ids[i]``'s text vector) with ``spec``
    (:class:`shoprec.modeling.sasrec.SasrecSpec`)."""
    from shoprec.modeling import sasrec as sr

    index = {item: i + 1 for i, item in enumerate(ids)}
    _, sequences, gaps = fold(rows, index)
    model, record = sr.fit(sequences, len(ids), spec, text=text, gaps=gaps)
    return SequenceModel(model.eval(), ids, asdict(spec)), record


def save(sm: SequenceModel, model_dir: Path, record: dict[str, Any]) -> Path:
    import torch

    out = model_dir / SEQUENCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    torch.save(sm.model.state_dict(), out / WEIGHTS)
    (out / META).write_text(json.dumps({"ids": sm.ids, "spec": sm.spec, "fit": record}, default=str))
    return out


def exists(model_dir: str | Path) -> bool:
    return (Path(model_dir) / SEQUENCE_DIR / WEIGHTS).is_file()


def load(model_dir: str | Path) -> SequenceModel:
    """The sequence model saved under ``model_dir`` (its item text table travels in the weights)."""
    import torch

    from shoprec.modeling import sasrec as sr

    folder = Path(model_dir) / SEQUENCE_DIR
    meta = json.loads((folder / META).read_text())
    spec = sr.SasrecSpec(**meta["spec"])
    state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    text = state["text"][1:].numpy() if "text" in state else None
    model = sr.SASRec(len(meta["ids"]), spec, text)
    model.load_state_dict(state)
    torch.set_num_threads(spec.threads)
    return SequenceModel(model.eval(), list(meta["ids"]), meta["spec"])


_LOADED: dict[str, tuple[int, SequenceModel]] = {}


def loaded(model_dir: str | Path) -> SequenceModel:
    """:func:`load`, once per process per saved model: keyed by its weights file's path, and
    loaded again when that file's modification time changes (a model retrained in place). The
    stream scores every micro-batch with the same model, and loading it and embedding the catalog
    each time was work the same for every batch."""
    weights = Path(model_dir) / SEQUENCE_DIR / WEIGHTS
    path, stamp = str(weights.resolve()), weights.stat().st_mtime_ns
    hit = _LOADED.get(path)
    if hit is None or hit[0] != stamp:
        hit = _LOADED[path] = (stamp, load(model_dir))
    return hit[1]


def _cached(model_dir: str) -> SequenceModel:
    """:func:`loaded`, in a Spark task: one torch thread per task (one task per core)."""
    import torch

    model = loaded(model_dir)
    torch.set_num_threads(1)
    return model
