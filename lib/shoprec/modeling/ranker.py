"""The ranking head: scores (user, candidate) pairs with p(click) and p(purchase).

The retriever finds a few hundred plausible items; the ranker orders them using what a dot product
cannot see: the user's price band against the item's price, how much of the user's activity is in
the item's category and brand, the item's popularity, rating, conversion and promotion. Its input
is the retriever's two vectors (as their element-wise product and their dot product) plus those
features; a small MLP with two logistic heads. The dot product also passes straight to both
logits with a learned weight, and the MLP's output starts at zero, so an untrained head orders
candidates exactly as the retriever does and training learns a correction to that order.

Training is listwise (:func:`listwise_loss`): each gold example becomes one list, its positive
(a click, and a purchase when it was one), random catalog items and *hard* negatives drawn from
the retriever's own top items for that user, the candidates scoring will put before the head. A
softmax over each list teaches the order among plausible items; a small pointwise term over the
positive and the random items keeps the heads' outputs probabilities. (Pointwise binary
cross-entropy alone, tried first, reordered the retriever's top candidates for the worse on
Office: with random negatives it learnt what separates plausible from implausible items, which
the retriever already knows, and with hard ones it learnt to push near-positives down.) The
lists come from examples whose features predate their events (the validation split's, see
``ranker.fit_split``), and after training only the share of the correction that ranks validation
positives best among their hard negatives is kept (``Ranker.correction``). The heads combine
into one score by configured weights (:func:`combine`).

Features are computed in Spark by the same expressions for training and scoring, so they cannot
drift: training's pairs carry all of them (:func:`pair_features`); scoring's pairs carry the
pair's own as one int (:func:`pair_codes`, with the user's shares once per user) and complete
them in the task with the item's, computed once per item (:func:`item_features`) and broadcast
like the item vectors. A test holds the decoded values equal to :func:`pair_features`'.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shoprec import errors
from shoprec import schemas as S
from shoprec.config import ObjectiveWeights
from shoprec.errors import ShoprecError
from shoprec.modeling.retrieval import tensor

log = logging.getLogger(__name__)

USER_VECTOR, ITEM_VECTOR, FEATURES = "user_vector", "item_vector", "features"
CLICK, PURCHASE, VALUE = "click", "purchase", "value"
P_CLICK, P_PURCHASE = "p_click", "p_purchase"
#: The tabular features, in the order of the ``features`` array.
FEATURE_NAMES: tuple[str, ...] = (
    "price_band_gap",
    "price_band_known",
    "log_popularity",
    "category_affinity",
    "brand_affinity",
    "rating_mean",
    "has_rating",
    "log_rating_count",
    "conversion_rate",
    "discount",
    "in_stock",
    "log_price",
)
RANKER_DIR, RANKER_FILE, STUDENT_FILE, META_FILE = "ranker", "ranker.pt", "student.pt", "ranker.json"
ITEM_VECTORS, MASK, HARD = "item_vectors", "mask", "hard"
#: One row per training example: its user vector, then per candidate (positive first, padded to a
#: fixed count) the flattened item vectors and features, labels, a padding mask, the hard flag.
LOADER_FIELDS = (USER_VECTOR, ITEM_VECTORS, FEATURES, CLICK, PURCHASE, MASK, HARD)
#: Initial weight of the retriever's cosine in each head's logit (cosines span about ±1).
SKIP_INIT = 5.0


def _band_index(col: Column) -> Column:
    out = F.lit(None).cast("double")
    for i, band in enumerate(S.PRICE_BANDS):
        out = F.when(col == band, F.lit(float(i))).otherwise(out)
    return out


def _total(weights: str) -> Column:
    return F.aggregate(F.col(weights), F.lit(0.0), lambda acc, w: acc + w[S.WEIGHT])


def _affinity(weights: str, name: Column) -> Column:
    """The share of the user's weight on ``name`` (0 when the user never touched it)."""
    total = _total(weights)
    match = F.aggregate(
        F.filter(F.col(weights), lambda w: w["name"] == name), F.lit(0.0), lambda acc, w: acc + w[S.WEIGHT]
    )
    return F.when(total > 0, match / total).otherwise(F.lit(0.0))


#: Features of the (user, item) pair; the rest of :data:`FEATURE_NAMES` belong to the item alone.
PAIR_FEATURE_NAMES: tuple[str, ...] = (
    "price_band_gap",
    "price_band_known",
    "category_affinity",
    "brand_affinity",
)
#: Features of the item alone, the same for every user, in :data:`FEATURE_NAMES`' order. Scoring
#: looks them up by the item's row in a broadcast matrix (:func:`item_features`), as it does the
#: item's vector, instead of moving them with every pair; training reads them in each pair's
#: ``features``.
ITEM_FEATURE_NAMES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in PAIR_FEATURE_NAMES)
ITEM_FEATURES = "item_features"


def item_feature(name: str) -> Column:
    """The expression of item feature ``name`` over the item table's columns (one definition,
    used for training's pairs, scoring's item matrix and the rules' discount)."""
    values = {
        "log_popularity": F.log1p(F.greatest(F.col(S.POPULARITY), F.lit(0.0))),
        "rating_mean": F.coalesce(F.col(S.RATING_MEAN) / 5.0, F.lit(0.0)),
        "has_rating": F.when(F.col(S.RATING_COUNT) > 0, 1.0).otherwise(0.0),
        "log_rating_count": F.log1p(F.col(S.RATING_COUNT).cast("double")),
        "conversion_rate": F.coalesce(F.col(S.CONVERSION_RATE), F.lit(0.0)),
        "discount": F.coalesce(F.col(S.DISCOUNT_PCT) / 100.0, F.lit(0.0)),
        "in_stock": F.when(F.col(S.IN_STOCK), 1.0).otherwise(0.0),
        "log_price": F.log1p(F.coalesce(F.col(S.PRICE), F.lit(0.0))),
    }
    return values[name].cast("float")


def item_value() -> Column:
    """An item's value for the multi-objective score: its price, 0 when unknown."""
    return F.coalesce(F.col(S.PRICE), F.lit(0.0)).cast("float")


def item_features(items: DataFrame) -> DataFrame:
    """``item_id`` and ``item_features`` (array<float>, :data:`ITEM_FEATURE_NAMES`)."""
    return items.select(
        S.ITEM_ID, F.array(*[item_feature(n) for n in ITEM_FEATURE_NAMES]).alias(ITEM_FEATURES)
    )


#: Where each of :data:`FEATURE_NAMES` sits in ``[pair features, item features]`` side by side:
#: the one mapping :func:`full_features` and scoring's per-batch completion both apply.
FEATURE_ORDER: tuple[int, ...] = tuple(
    [*PAIR_FEATURE_NAMES, *ITEM_FEATURE_NAMES].index(n) for n in FEATURE_NAMES
)


def full_features(pair: NDArray[Any], item: NDArray[Any]) -> NDArray[Any]:
    """``(n, len(FEATURE_NAMES))`` from each pair's :data:`PAIR_FEATURE_NAMES` and its item's
    :data:`ITEM_FEATURE_NAMES` values: the model's ``features`` input in its order."""
    both: NDArray[Any] = np.concatenate([pair, item], axis=1).astype(np.float32, copy=False)
    out: NDArray[Any] = np.ascontiguousarray(both[:, list(FEATURE_ORDER)])
    return out


def _joined(pairs: DataFrame, items: DataFrame, profiles: DataFrame, *item_columns: str) -> DataFrame:
    """``pairs`` with the item's category, brand and band index (``_cat``, ``_brand``, ``_iband``),
    ``item_columns``, and the user's band index and weighted tastes (empty without a profile)."""
    it = items.select(
        S.ITEM_ID,
        F.col(S.TOP_CATEGORY).alias("_cat"),
        F.col(S.BRAND).alias("_brand"),
        _band_index(F.col(S.PRICE_BAND)).alias("_iband"),
        *item_columns,
    )
    pr = profiles.select(
        S.USER_KEY, _band_index(F.col(S.PRICE_BAND)).alias("_uband"), S.TOP_CATEGORIES, S.TOP_BRANDS
    )
    df = pairs.join(it, S.ITEM_ID).join(pr, S.USER_KEY, "left")
    empty = F.array().cast(profiles.schema[S.TOP_CATEGORIES].dataType)
    return df.withColumn(S.TOP_CATEGORIES, F.coalesce(S.TOP_CATEGORIES, empty)).withColumn(
        S.TOP_BRANDS, F.coalesce(S.TOP_BRANDS, empty)
    )


def pair_features(pairs: DataFrame, items: DataFrame, profiles: DataFrame) -> DataFrame:
    """``pairs`` (user_key, item_id, ...) with ``features`` (array<float>, :data:`FEATURE_NAMES`)
    and ``value`` (the item's price, 0 when unknown). Users without a profile get neutral values."""
    item_columns = (
        S.POPULARITY,
        S.RATING_MEAN,
        S.RATING_COUNT,
        S.CONVERSION_RATE,
        S.DISCOUNT_PCT,
        S.IN_STOCK,
        S.PRICE,
    )
    df = _joined(pairs, items, profiles, *item_columns)
    known = F.col("_uband").isNotNull() & F.col("_iband").isNotNull()
    values = {
        "price_band_gap": F.when(known, F.abs(F.col("_uband") - F.col("_iband")) / 2.0).otherwise(0.5),
        "price_band_known": F.when(known, 1.0).otherwise(0.0),
        "category_affinity": _affinity(S.TOP_CATEGORIES, F.col("_cat")),
        "brand_affinity": _affinity(S.TOP_BRANDS, F.col("_brand")),
    }
    assert tuple(values) == PAIR_FEATURE_NAMES
    columns = [values[n].cast("float") if n in values else item_feature(n) for n in FEATURE_NAMES]
    return df.select(*pairs.columns, F.array(*columns).alias(FEATURES), item_value().alias(VALUE))


# Scoring's pairs carry their PAIR_FEATURE_NAMES as one int each (:func:`pair_codes`) and the
# user's category and brand shares once per user (:func:`profile_shares`); the task decodes them
# (:func:`decode_pair_features`). Four floats per pair were 40% of what Spark's JVM converted
# for the ranker's UDF. Bits, from CODE_SHIFT up: the band gap times 2 (0-2; 1 when unknown), 1
# bit band known, then the 1-based position of the item's category among the user's top
# categories (0: absent) and of its brand among the top brands, 8 bits each. The low CODE_SHIFT
# bits are the caller's (scoring keeps a candidate's sources and whether it was bought there).
PAIR_CODE, CATEGORY_SHARES, BRAND_SHARES = "_pair_code", "_category_shares", "_brand_shares"
CODE_SHIFT, _POSITION_BITS = 10, 8
_KNOWN_BIT, _CATEGORY_SHIFT = 2, 3
_BRAND_SHIFT = _CATEGORY_SHIFT + _POSITION_BITS
#: The longest top-categories or top-brands list a pair code can point into.
MAX_TOP = (1 << _POSITION_BITS) - 1


def _position(weights: str, name: Column) -> Column:
    """1-based position of ``name`` among the user's weighted names, 0 when absent (names in a
    profile are a map's keys, so at most one matches: its share is :func:`_affinity`'s value)."""
    pos = F.coalesce(F.array_position(F.transform(F.col(weights), lambda w: w["name"]), name), F.lit(0))
    too_long = F.raise_error(
        F.concat(
            F.lit("user "),
            F.col(S.USER_KEY),
            F.lit(
                f": the item's entry in {weights} lies beyond the {MAX_TOP} a pair code can "
                "address; lower features.top_k"
            ),
        )
    )
    return F.when(pos > MAX_TOP, too_long.cast("long")).otherwise(pos)


def pair_codes(pairs: DataFrame, items: DataFrame, profiles: DataFrame) -> DataFrame:
    """``pairs`` with :data:`PAIR_CODE` (int): the pair's :data:`PAIR_FEATURE_NAMES` as scoring's
    ranker receives them, decoded in the task by :func:`decode_pair_features` to the values
    :func:`pair_features` computes (the same joins and band indexes, tested equal)."""
    df = _joined(pairs, items, profiles)
    known = F.col("_uband").isNotNull() & F.col("_iband").isNotNull()
    gap2 = F.when(known, F.abs(F.col("_uband") - F.col("_iband"))).otherwise(1.0).cast("long")
    code = encode_pair_code(
        gap2,
        known.cast("long"),
        _position(S.TOP_CATEGORIES, F.col("_cat")),
        _position(S.TOP_BRANDS, F.col("_brand")),
    )
    return df.select(*pairs.columns, code.cast("int").alias(PAIR_CODE))


def encode_pair_code(gap2: Any, known: Any, category: Any, brand: Any) -> Any:
    """The bits of a pair code (low :data:`CODE_SHIFT` bits clear) from the band gap times 2, the
    band-known flag and the 1-based positions among the user's top categories and brands (0:
    absent): Spark columns (:func:`pair_codes`) or numpy int arrays (tests, benchmarks)."""
    if isinstance(gap2, Column):
        shift = F.shiftleft
        return shift(
            gap2 + shift(known, _KNOWN_BIT) + shift(category, _CATEGORY_SHIFT) + shift(brand, _BRAND_SHIFT),
            CODE_SHIFT,
        )
    return (gap2 | known << _KNOWN_BIT | category << _CATEGORY_SHIFT | brand << _BRAND_SHIFT) << CODE_SHIFT


def band_gap_of(code: Column) -> Column:
    """A pair code's ``price_band_gap`` as a Spark column (float), without decoding the rest."""
    return (F.shiftright(code, CODE_SHIFT).bitwiseAND(3) / 2.0).cast("float")


def profile_shares(profiles: DataFrame) -> DataFrame:
    """``user_key``, :data:`CATEGORY_SHARES` and :data:`BRAND_SHARES` (array<float>): each top
    entry's share of the user's weight, in the profile's order (what a pair code's positions
    index), computed as :func:`_affinity` computes a match's."""

    def shares(weights: str) -> Column:
        total = _total(weights)
        return F.transform(
            F.col(weights),
            lambda w: F.when(total > 0, w[S.WEIGHT] / total).otherwise(F.lit(0.0)).cast("float"),
        )

    return profiles.select(
        S.USER_KEY,
        shares(S.TOP_CATEGORIES).alias(CATEGORY_SHARES),
        shares(S.TOP_BRANDS).alias(BRAND_SHARES),
    )


class PairCodeError(ValueError):
    """A pair code that points past its user's shares; ``user`` is the user's row."""

    def __init__(self, message: str, user: int) -> None:
        super().__init__(message)
        self.user = user


def decode_pair_features(
    codes: NDArray[Any],
    users: NDArray[Any],
    category_shares: tuple[NDArray[Any], NDArray[Any]],
    brand_shares: tuple[NDArray[Any], NDArray[Any]],
) -> NDArray[Any]:
    """``(n, len(PAIR_FEATURE_NAMES))`` float32 from ``n`` pair codes (:func:`pair_codes`); pair
    ``i`` belongs to user ``users[i]``, whose shares are ``values[offsets[u]:offsets[u + 1]]``
    of each ``(values, offsets)`` (:func:`profile_shares`)."""
    c = np.asarray(codes, dtype=np.int64) >> CODE_SHIFT
    users = np.asarray(users, dtype=np.int64)
    out = np.empty((len(c), len(PAIR_FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = (c & 3).astype(np.float32) * np.float32(0.5)
    out[:, 1] = (c >> _KNOWN_BIT) & 1
    mask = (1 << _POSITION_BITS) - 1
    for col, (shift, (values, offsets), name) in enumerate(
        ((_CATEGORY_SHIFT, category_shares, CATEGORY_SHARES), (_BRAND_SHIFT, brand_shares, BRAND_SHARES)),
        start=2,
    ):
        pos = (c >> shift) & mask
        offsets = np.asarray(offsets, dtype=np.int64)
        start = offsets[users]
        beyond = pos > offsets[users + 1] - start
        if beyond.any():
            i = int(np.flatnonzero(beyond)[0])
            raise PairCodeError(
                f"a pair code points at entry {int(pos[i])} of {name}, which holds "
                f"{int(offsets[users[i] + 1] - start[i])}",
                int(users[i]),
            )
        padded = np.append(np.asarray(values, dtype=np.float32), np.float32(0.0))
        out[:, col] = padded[np.where(pos > 0, start + pos - 1, len(padded) - 1)]
    return out


class Ranker(torch.nn.Module):
    """MLP over [u ⊙ v, u·v, features] with a click head and a purchase head (logits)."""

    def __init__(
        self,
        dim: int,
        n_features: int,
        hidden: Sequence[int],
        skip_init: float = SKIP_INIT,
        product: bool = True,
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        # without the element-wise product the MLP corrects the retriever's score by the
        # features alone: a few thousand parameters instead of one per vector dimension per unit
        self.product = product
        width = (dim if product else 0) + 1 + n_features
        self.norm = torch.nn.LayerNorm(width)
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.trunk = torch.nn.Sequential(*layers)
        self.heads = torch.nn.Linear(width, 2)
        # the retriever's own score passes straight to both heads: the MLP learns a correction
        # on top of it (starting as the retriever's ranking) instead of rediscovering it through
        # the normalised product, where one dimension out of hundreds carries it
        self.skip = torch.nn.Parameter(torch.full((2,), float(skip_init)))
        # the correction starts at zero: an untrained head orders candidates as the retriever does
        torch.nn.init.zeros_(self.heads.weight)
        self.dim, self.n_features, self.hidden = dim, n_features, tuple(hidden)
        #: How much of the MLP's correction the logits take (chosen on validation after
        #: training, see ``shoprec.training.ranker_job.choose_correction``; saved in the meta).
        self.correction = 1.0

    def forward(self, users: torch.Tensor, items: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``(batch, 2)`` logits: click, purchase."""
        prod = users * items
        dot = prod.sum(-1, keepdim=True)
        x = torch.cat([prod, dot, features] if self.product else [dot, features], dim=-1)
        h = self.trunk(self.norm(x))
        if self.correction != 1.0:  # the share scales what the MLP adds, not the heads' bias
            h = self.correction * h
        out: torch.Tensor = self.heads(h) + self.skip * dot
        return out


def listwise_loss(
    logits: torch.Tensor,
    click: torch.Tensor,
    purchase: torch.Tensor,
    mask: torch.Tensor,
    hard: torch.Tensor,
    calibration: float,
    hard_lists: bool = False,
) -> torch.Tensor:
    """Each example's candidates as one list: per head, the softmax cross-entropy of its positive
    against the other candidates (the order scoring needs), plus ``calibration`` x the binary
    cross-entropy over the positive and the *random* negatives, which pins the logits' scale so
    the heads stay probabilities (a softmax alone is blind to a shift). Hard negatives take part
    only in the softmax: they are plausible items, some of them near-positives, that the head
    must rank below the positive, not call unlikely.

    With ``hard_lists`` the softmax runs only over lists that have hard negatives, and over their
    positive and hard negatives alone: the order among retrieved items is all it teaches, where
    random items would teach what sets any positive apart from the catalogue (popularity above
    all), which misleads among retrieved candidates.

    ``logits`` ``(batch, n, 2)``; ``click``, ``purchase``, ``mask`` (1 = a real candidate, 0 =
    padding) and ``hard`` ``(batch, n)``.
    """
    total = logits.new_zeros(())
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    listed = mask
    if hard_lists:
        listed = (
            mask
            * ((hard > 0) | (click > 0) | (purchase > 0)).float()
            * (hard.sum(1, keepdim=True) > 0).float()
        )
    for head, labels in enumerate((click, purchase)):
        x = logits[..., head].masked_fill(listed <= 0, float("-inf"))
        # lists whose positive has this label (a click that was no purchase) and that take part
        has = ((labels * listed).sum(1) > 0) & ((listed > 0).sum(1) > 1)
        if bool(has.any()):
            logp = torch.log_softmax(x[has], dim=1).masked_fill(listed[has] <= 0, 0.0)
            chosen = labels[has] * listed[has]
            total = total + (-(logp * chosen).sum(1) / chosen.sum(1)).mean()
        if calibration > 0:
            keep = (mask > 0) & (hard <= 0)
            total = total + calibration * bce(logits[..., head][keep], labels[keep])
    return total


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's probabilities (soft labels), both heads."""
    return torch.nn.functional.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))


def combine(
    p_click: NDArray[Any], p_purchase: NDArray[Any], value: NDArray[Any], w: ObjectiveWeights
) -> NDArray[Any]:
    """One score from the heads: p(click)^a · p(purchase)^b · (1 + value)^c, as a sum of logs."""
    eps = 1e-7
    out: NDArray[Any] = (
        w.click * np.log(np.clip(p_click, eps, 1.0))
        + w.purchase * np.log(np.clip(p_purchase, eps, 1.0))
        + w.value * np.log1p(np.clip(value, 0.0, None))
    )
    return out


def auc(labels: NDArray[Any], scores: NDArray[Any]) -> float | None:
    """Area under the ROC curve (Mann–Whitney, ties count half); None without both classes."""
    labels = np.asarray(labels) > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank over runs of equal scores
    start = 0
    for end in range(1, len(sorted_scores) + 1):
        if end == len(sorted_scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class Saved:
    """A ranker on disk: the network, its shape and how its heads combine."""

    model: Ranker
    meta: dict[str, Any]


def save(model: Ranker, out: Path, meta: dict[str, Any], file: str = RANKER_FILE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / file)
    shape = {
        "dim": model.dim,
        "n_features": model.n_features,
        "hidden": list(model.hidden),
        "product": model.product,
        "correction": model.correction,
    }
    meta_path = out / META_FILE
    current = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    current.update(meta)
    current[file] = shape
    current["feature_names"] = list(FEATURE_NAMES)
    meta_path.write_text(json.dumps(current, indent=2, default=str))


def load(path: str | Path, student: bool = False) -> Saved:
    """The ranker (or its distilled student) saved under ``path``, in eval mode on the CPU."""
    path = Path(path)
    file = STUDENT_FILE if student else RANKER_FILE
    if not (path / META_FILE).is_file() or not (path / file).is_file():
        raise ShoprecError(
            f"{path}: no {'student ' if student else ''}ranker saved here ({file}, {META_FILE})"
        )
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(path / META_FILE, e) from e
    if not isinstance(meta, dict):
        raise damaged(path / META_FILE, f"holds a {type(meta).__name__}, not an object")
    if meta.get("feature_names") != list(FEATURE_NAMES):
        raise ShoprecError(f"{path}: the ranker was trained on other features; retrain it")
    try:
        shape = meta[file]
        model = Ranker(shape["dim"], shape["n_features"], shape["hidden"], product=shape.get("product", True))
        correction = float(shape.get("correction", 1.0))
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a meta file without this net's shape
        raise damaged(path / META_FILE, e) from e
    try:
        state = torch.load(path / file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise damaged(path / file, e) from e
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:  # another shape, missing or extra weights
        raise damaged(path / file, e) from e
    model.correction = correction
    return Saved(model.eval(), meta)


def damaged(path: Path, reason: object) -> ShoprecError:
    """The one-line error for a saved ranker that cannot be loaded: retraining rewrites it whole."""
    why = errors.reason(reason)
    return ShoprecError(f"{path}: damaged ranker ({why}); retrain with `shoprec train`")


def param_count(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def sigmoid(x: NDArray[Any]) -> NDArray[Any]:
    out: NDArray[Any] = 1.0 / (1.0 + np.exp(-x))
    return out


def log_loss(labels: NDArray[Any], p: NDArray[Any]) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def predict(
    model: Any,
    users: NDArray[Any],
    items: NDArray[Any],
    feats: NDArray[Any],
    batch: int,
    user_rows: NDArray[Any] | None = None,
    item_rows: NDArray[Any] | None = None,
    item_features: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """``(n, 2)`` probabilities (click, purchase), one row per row of ``feats``.

    Pair ``i`` is user ``user_rows[i]`` of ``users`` and item ``item_rows[i]`` of ``items`` (or row
    ``i`` of each without them): the vectors are gathered one batch at a time, so a user's vector
    and the item matrix are never repeated per pair in memory. Torch gathers them
    (``index_select``, on the model's threads; numpy's row indexing, single-threaded, made the
    loop about a third slower on 2 cores). With ``item_features`` (``(items,
    len(ITEM_FEATURE_NAMES))``, in the rows of ``items``), ``feats`` holds each pair's
    :data:`~shoprec.modeling.ranker.PAIR_FEATURE_NAMES` alone and each batch completes them from
    its items' rows, in cache, instead of a full ``(n, 12)`` copy made up front."""
    import torch

    device = next(model.parameters()).device
    u_all, v_all, f_all = tensor(users), tensor(items), tensor(feats)
    u_rows, v_rows = (
        None if r is None else torch.from_numpy(np.asarray(r, dtype=np.int64)) for r in (user_rows, item_rows)
    )
    if_all = None if item_features is None else tensor(item_features)
    order = torch.tensor(FEATURE_ORDER)
    out = []
    with torch.inference_mode():
        for start in range(0, len(feats), batch):
            sl = slice(start, start + batch)
            u = u_all[sl] if u_rows is None else u_all.index_select(0, u_rows[sl])
            v = v_all[sl] if v_rows is None else v_all.index_select(0, v_rows[sl])
            f = f_all[sl]
            if if_all is not None:
                item_f = if_all[sl] if v_rows is None else if_all.index_select(0, v_rows[sl])
                f = torch.cat([f, item_f], dim=1).index_select(1, order)
            logits = model(u.to(device), v.to(device), f.to(device))
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)
