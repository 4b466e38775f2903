"""The ranking head's parts: AUC, the combined score, the loss, and the pair features in Spark."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import ObjectiveWeights
from shoprec.modeling import ranker as rk


def test_auc_matches_hand_computed_cases_and_a_pairwise_count() -> None:
    assert rk.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert rk.auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert rk.auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie counts half
    assert rk.auc(np.array([1, 1]), np.array([0.5, 0.7])) is None
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounded: plenty of ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert rk.auc(labels, scores) == pytest.approx(pairwise)


def test_combined_score_is_a_weighted_product_of_the_heads() -> None:
    p_click, p_buy, value = np.array([0.5, 0.5]), np.array([0.1, 0.2]), np.array([10.0, 1.0])
    engage = rk.combine(p_click, p_buy, value, ObjectiveWeights(click=1, purchase=0, value=0))
    assert engage[0] == engage[1]
    buy = rk.combine(p_click, p_buy, value, ObjectiveWeights(click=1, purchase=1, value=0))
    assert buy[1] > buy[0]
    revenue = rk.combine(p_click, p_buy, value, ObjectiveWeights(click=1, purchase=1, value=1))
    assert revenue[0] > revenue[1]  # 0.5·0.1·11 > 0.5·0.2·2
    assert np.exp(revenue[0]) == pytest.approx(0.5 * 0.1 * 11)


def test_each_head_learns_its_own_label_from_lists() -> None:
    torch.manual_seed(0)
    lists, n, dim = 128, 6, 4
    users, items = torch.randn(lists, dim), torch.randn(lists, n, dim)
    feats = torch.randn(lists, n, len(rk.FEATURE_NAMES))
    # per list: the click is the candidate with the largest feature 0, the purchase feature 1's
    click = torch.nn.functional.one_hot(feats[..., 0].argmax(1), n).float()
    purchase = torch.nn.functional.one_hot(feats[..., 1].argmax(1), n).float()
    mask, hard = torch.ones(lists, n), torch.zeros(lists, n)
    mask[:, -1] = 0  # padding: never a candidate
    click, purchase = click * mask, purchase * mask
    keep = (click.sum(1) > 0) & (purchase.sum(1) > 0)
    users, items, feats, click, purchase, mask = (
        t[keep] for t in (users, items, feats, click, purchase, mask)
    )
    hard = hard[keep]
    model = rk.Ranker(dim, len(rk.FEATURE_NAMES), (16,))

    def logits() -> torch.Tensor:
        b = len(users)
        flat = model(users.repeat_interleave(n, 0), items.reshape(b * n, dim), feats.reshape(b * n, -1))
        return flat.reshape(b, n, 2)

    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        rk.listwise_loss(logits(), click, purchase, mask, hard, 0.1).backward()
        opt.step()
    from shoprec.training.ranker_job import positive_mrr

    with torch.no_grad():
        out = logits().numpy()
    m = mask.numpy()
    assert positive_mrr(out[..., 0], click.numpy(), m) > 0.9
    assert positive_mrr(out[..., 1], purchase.numpy(), m) > 0.9
    assert positive_mrr(out[..., 1], click.numpy(), m) < 0.7  # the purchase head did not copy clicks


def test_an_untrained_head_orders_as_the_retriever_and_hard_negatives_skip_calibration() -> None:
    torch.manual_seed(1)
    users = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    model = rk.Ranker(8, len(rk.FEATURE_NAMES), (16,))
    with torch.no_grad():
        out = model(users.repeat_interleave(3, 0), items.repeat(3, 1), torch.randn(9, len(rk.FEATURE_NAMES)))
    cos = (users @ items.T).reshape(-1)
    assert torch.equal(out[:, 0].argsort(), cos.argsort())  # features do not move it yet
    from shoprec.training.ranker_job import positive_mrr

    # the positive's reciprocal rank among its own list; padding never outranks it; ties count against
    ones = np.ones((1, 3))
    assert positive_mrr(np.array([[3.0, 1.0, 2.0]]), np.array([[0.0, 0.0, 1.0]]), ones) == 0.5
    assert (
        positive_mrr(np.array([[3.0, 1.0, 2.0]]), np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, 1, 1]])) == 1
    )
    assert positive_mrr(np.array([[2.0, 2.0]]), np.array([[1.0, 0.0]]), np.ones((1, 2))) == 0.5
    # the calibration term ignores hard negatives; the listwise term uses them
    logits = torch.zeros(1, 3, 2, requires_grad=True)
    click = purchase = torch.tensor([[1.0, 0.0, 0.0]])
    mask, hard = torch.ones(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    rk.listwise_loss(logits, click, purchase, mask, hard, 1.0).backward()
    listwise_only = torch.zeros(1, 3, 2, requires_grad=True)
    rk.listwise_loss(listwise_only, click, purchase, mask, hard, 0.0).backward()
    assert logits.grad is not None and listwise_only.grad is not None
    assert torch.allclose(logits.grad[0, 2], listwise_only.grad[0, 2])  # hard: softmax only
    assert not torch.allclose(logits.grad[0, 1], listwise_only.grad[0, 1])  # random: both terms
    # padding takes no part at all
    padded = torch.zeros(1, 3, 2, requires_grad=True)
    rk.listwise_loss(padded, click, purchase, torch.tensor([[1.0, 1.0, 0.0]]), hard, 1.0).backward()
    assert padded.grad is not None and float(padded.grad[0, 2].abs().sum()) == 0.0


@pytest.mark.spark
def test_pair_features_in_spark(spark: SparkSession) -> None:
    items = spark.createDataFrame(
        [("i1", "Audio", "Sony", "premium", 50.0, 4.0, 10, 0.2, 20.0, True, 99.0)],
        f"{S.ITEM_ID} string, {S.TOP_CATEGORY} string, {S.BRAND} string, {S.PRICE_BAND} string, "
        f"{S.POPULARITY} double, {S.RATING_MEAN} double, {S.RATING_COUNT} long, "
        f"{S.CONVERSION_RATE} double, {S.DISCOUNT_PCT} double, {S.IN_STOCK} boolean, {S.PRICE} double",
    )
    profiles = spark.createDataFrame(
        [("u1", "budget", [("Audio", 3.0), ("Books", 1.0)], [("Sony", 1.0)])],
        f"{S.USER_KEY} string, {S.PRICE_BAND} string, "
        f"{S.TOP_CATEGORIES} array<struct<name:string,{S.WEIGHT}:double>>, "
        f"{S.TOP_BRANDS} array<struct<name:string,{S.WEIGHT}:double>>",
    )
    pairs = spark.createDataFrame(
        [("u1", "i1", datetime(2026, 1, 1)), ("stranger", "i1", datetime(2026, 1, 1))],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, t timestamp",
    )
    rows = {r[S.USER_KEY]: r for r in rk.pair_features(pairs, items, profiles).collect()}
    f = dict(zip(rk.FEATURE_NAMES, rows["u1"][rk.FEATURES], strict=True))
    assert f["price_band_gap"] == 1.0 and f["price_band_known"] == 1.0  # budget user, premium item
    assert f["category_affinity"] == 0.75 and f["brand_affinity"] == 1.0
    assert f["rating_mean"] == pytest.approx(0.8) and f["has_rating"] == 1.0
    assert f["discount"] == pytest.approx(0.2) and f["in_stock"] == 1.0
    assert f["log_popularity"] == pytest.approx(np.log1p(50.0), rel=1e-6)
    assert rows["u1"][rk.VALUE] == 99.0 and rows["u1"]["t"] == datetime(2026, 1, 1)
    g = dict(zip(rk.FEATURE_NAMES, rows["stranger"][rk.FEATURES], strict=True))
    assert g["price_band_gap"] == 0.5 and g["price_band_known"] == 0.0 and g["category_affinity"] == 0.0
    (item_only,) = [r[rk.ITEM_FEATURES] for r in rk.item_features(items).collect()]
    pair_part = [f[n] for n in rk.PAIR_FEATURE_NAMES]  # scoring's split: the pair's own, the item's
    whole = rk.full_features(np.array([pair_part]), np.array([item_only]))[0]
    assert whole.tolist() == pytest.approx(list(rows["u1"][rk.FEATURES]), abs=0)


@pytest.mark.spark
def test_scorings_pair_codes_decode_to_trainings_pair_features(spark: SparkSession) -> None:
    """Every case the Spark expressions handle: no profile, null or unknown bands, a category or
    brand the item lacks, a zero or null total, a null name in the tastes, no match."""
    items = spark.createDataFrame(
        [
            ("i1", "Audio", "Sony", "premium"),
            ("i2", "Books", None, "budget"),
            ("i3", None, "Acme", "unknown"),
            ("i4", "Toys", "Sony", "mid-range"),
            ("i5", "Garden", "Other", None),
        ],
        f"{S.ITEM_ID} string, {S.TOP_CATEGORY} string, {S.BRAND} string, {S.PRICE_BAND} string",
    ).select(  # the item's own columns: training's features need them, a pair code does not
        "*",
        *[
            F.lit(1.0).alias(c)
            for c in (S.POPULARITY, S.RATING_MEAN, S.CONVERSION_RATE, S.DISCOUNT_PCT, S.PRICE)
        ],
        F.lit(2).cast("long").alias(S.RATING_COUNT),
        F.lit(True).alias(S.IN_STOCK),
    )
    w = f"array<struct<name:string,{S.WEIGHT}:double>>"
    profiles = spark.createDataFrame(
        [
            ("u1", "budget", [("Audio", 3.0), ("Books", 1.0)], [("Sony", 1.0)]),
            ("u2", None, [("Toys", 2.0)], []),
            ("u3", "premium", [("Audio", 0.0)], [("Acme", None), ("Sony", 2.0)]),
            (
                "u4",
                "mid-range",
                [(None, 1.0), ("Toys", 1.0), ("Garden", 2.0)],
                [("Other", 0.25), ("Sony", 0.75)],
            ),
        ],
        f"{S.USER_KEY} string, {S.PRICE_BAND} string, {S.TOP_CATEGORIES} {w}, {S.TOP_BRANDS} {w}",
    )
    users = ["u1", "u2", "u3", "u4", "stranger"]
    pairs = spark.createDataFrame(
        [(u, f"i{i}") for u in users for i in range(1, 6)], f"{S.USER_KEY} string, {S.ITEM_ID} string"
    )
    at = [rk.FEATURE_NAMES.index(n) for n in rk.PAIR_FEATURE_NAMES]
    want = {
        (r[S.USER_KEY], r[S.ITEM_ID]): [r[rk.FEATURES][i] for i in at]
        for r in rk.pair_features(pairs, items, profiles).collect()
    }
    assert len(want) == 25
    coded = rk.pair_codes(pairs, items, profiles).select(
        S.USER_KEY, S.ITEM_ID, rk.PAIR_CODE, rk.band_gap_of(F.col(rk.PAIR_CODE)).alias("gap")
    )
    got_rows = coded.collect()
    shares = {r[S.USER_KEY]: r for r in rk.profile_shares(profiles).collect()}
    user_row = {u: i for i, u in enumerate(users)}

    def lists(name: str) -> tuple[np.ndarray, np.ndarray]:
        per_user = [list(shares[u][name]) if u in shares else [] for u in users]
        offsets = np.cumsum([0, *[len(v) for v in per_user]])
        return np.array([x for v in per_user for x in v], dtype=np.float32), offsets

    codes = np.array([r[rk.PAIR_CODE] for r in got_rows], dtype=np.int32)
    assert not (codes & ((1 << rk.CODE_SHIFT) - 1)).any()  # the low bits are left to the caller
    decoded = rk.decode_pair_features(
        codes,
        np.array([user_row[r[S.USER_KEY]] for r in got_rows]),
        lists(rk.CATEGORY_SHARES),
        lists(rk.BRAND_SHARES),
    )
    for r, feats in zip(got_rows, decoded, strict=True):
        expected = want[(r[S.USER_KEY], r[S.ITEM_ID])]
        assert feats.tolist() == expected, (r[S.USER_KEY], r[S.ITEM_ID])
        assert r["gap"] == expected[0]
    # the cases are there: matches with shares below 1, and both band outcomes
    values = {name: {float(f[i]) for f in decoded} for i, name in enumerate(rk.PAIR_FEATURE_NAMES)}
    assert values["price_band_gap"] == {0.0, 0.5, 1.0}
    assert {0.75, 0.25, 0.5}.issubset(values["category_affinity"] | values["brand_affinity"])
    # a code that points past its user's shares is named, not read out of bounds
    cats = (np.array([0.5], dtype=np.float32), np.array([0, 1]))
    with pytest.raises(rk.PairCodeError, match="entry 2 of _category_shares, which holds 1") as err:
        rk.decode_pair_features(np.array([2 << (rk.CODE_SHIFT + 3)]), np.array([0]), cats, cats)
    assert err.value.user == 0
    # a taste list longer than a code can address stops with the user's name
    long = spark.createDataFrame(
        [("u9", "mid-range", [(f"c{j}", 1.0) for j in range(300)] + [("Toys", 1.0)], [])],
        f"{S.USER_KEY} string, {S.PRICE_BAND} string, {S.TOP_CATEGORIES} {w}, {S.TOP_BRANDS} {w}",
    )
    one = spark.createDataFrame([("u9", "i4")], f"{S.USER_KEY} string, {S.ITEM_ID} string")
    with pytest.raises(Exception, match="user u9: the item's entry in top_categories lies beyond"):
        rk.pair_codes(one, items, long).collect()


def test_the_head_fits_on_examples_whose_features_predate_them(spark: SparkSession) -> None:
    from shoprec.config import RankerConfig
    from shoprec.training.ranker_job import fit_examples

    rows = [
        (split, f"u{u}", datetime(2026, 1, 1 + e), f"i{e}")
        for split, users in ((S.TRAIN, 300), (S.VALID, 200))
        for u in range(users)
        for e in range(2)
    ]
    gold = spark.createDataFrame(
        rows, f"{S.SPLIT} string, {S.USER_KEY} string, {S.TARGET_TIME} timestamp, {S.POSITIVE_ITEM} string"
    )
    valid_users = {f"u{u}" for u in range(200)}
    # default: the validation split's examples only, a fifth of their users held out, whole
    got = fit_examples(gold, RankerConfig(), None).collect()
    assert len(got) == 400
    by_user: dict[str, set[str]] = {}
    for r in got:
        by_user.setdefault(r[S.USER_KEY], set()).add(r[S.SPLIT])
    assert set(by_user) == valid_users and all(len(s) == 1 for s in by_user.values())
    held = sum(s == {S.VALID} for s in by_user.values())
    assert 20 <= held <= 60  # about 20% of 200 users
    assert (
        fit_examples(gold, RankerConfig(holdout=0.5), None).where(f"{S.SPLIT} = 'valid'").count() > 2 * held
    )
    # the old way: the retriever's training examples, validated on the validation split
    old = fit_examples(gold, RankerConfig(fit_split="train"), None)
    assert (
        old.where(f"{S.SPLIT} = 'train'").count() == 600 and old.where(f"{S.SPLIT} = 'valid'").count() == 400
    )


def test_the_share_of_the_correction_kept_is_the_one_that_orders_validation_best(tmp_path: Path) -> None:
    from shoprec.training.ranker_job import choose_correction, hard_lists

    rng = np.random.default_rng(5)
    lists, n = 400, 6  # positive, 2 random, 3 hard negatives
    click = np.zeros((lists, n), dtype=np.float32)
    click[:, 0] = 1
    hard = np.zeros_like(click)
    hard[:, 3:] = 1
    hard[::4] = 0  # a quarter of the lists have no hard negatives
    mask = np.ones_like(click)
    dot = rng.normal(size=(lists, n)).astype(np.float32) + 0.5 * click  # the retriever: some signal
    skip = np.array([5.0, 5.0], dtype=np.float32)
    base = dot[..., None] * skip
    helpful = 4.0 * click + rng.normal(size=(lists, n)).astype(np.float32)  # knows the positive
    noise = 20.0 * rng.normal(size=(lists, n)).astype(np.float32)  # knows nothing, loudly
    pred = {"dot": dot, rk.CLICK: click, rk.PURCHASE: click, rk.MASK: mask, rk.HARD: hard}
    share, scores = choose_correction({**pred, "logits": base + helpful[..., None]}, skip, (0.0, 0.5, 1.0))
    assert share == 1.0 and scores[1.0] > scores[0.0]
    share, scores = choose_correction({**pred, "logits": base + noise[..., None]}, skip, (0.0, 0.5, 1.0))
    assert share == 0.0 and scores[0.0] > scores[1.0]
    # the lists it judges by: positives and hard negatives of lists that have hard negatives
    judged = hard_lists(pred)
    assert judged[::4].sum() == 0 and (judged[1] == [1, 0, 0, 1, 1, 1]).all()
    # a saved head keeps its share
    model = rk.Ranker(8, len(rk.FEATURE_NAMES), (4,))
    model.correction = 0.25
    rk.save(model, tmp_path, {})
    assert rk.load(tmp_path).model.correction == 0.25


def test_a_damaged_ranker_directory_names_the_file_and_says_retrain(tmp_path: Path) -> None:
    import json
    import re

    from shoprec.errors import ShoprecError

    def saved() -> Path:
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        rk.save(rk.Ranker(8, len(rk.FEATURE_NAMES), (4,)), out, {})
        return out

    def damaged(file: Path, reason: str) -> AbstractContextManager[pytest.ExceptionInfo[ShoprecError]]:
        pattern = rf"^{re.escape(str(file))}: damaged ranker \({reason}.*\); retrain with `shoprec train`$"
        return pytest.raises(ShoprecError, match=pattern)

    bad_json = saved()
    (bad_json / rk.META_FILE).write_text('{"feature_names": [')
    with damaged(bad_json / rk.META_FILE, "JSONDecodeError"):
        rk.load(bad_json)
    no_shape = saved()
    meta = json.loads((no_shape / rk.META_FILE).read_text())
    del meta[rk.RANKER_FILE]["hidden"]
    (no_shape / rk.META_FILE).write_text(json.dumps(meta))
    with damaged(no_shape / rk.META_FILE, "KeyError: 'hidden'"):
        rk.load(no_shape)
    truncated = saved()
    data = (truncated / rk.RANKER_FILE).read_bytes()
    (truncated / rk.RANKER_FILE).write_bytes(data[: len(data) // 2])
    with damaged(truncated / rk.RANKER_FILE, ""):
        rk.load(truncated)
    other_shape = saved()
    torch.save(rk.Ranker(6, len(rk.FEATURE_NAMES), (4,)).state_dict(), other_shape / rk.RANKER_FILE)
    with damaged(other_shape / rk.RANKER_FILE, "RuntimeError: Error"):
        rk.load(other_shape)
    assert rk.load(saved()).model.dim == 8
