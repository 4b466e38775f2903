"""The synthetic shop as pure numpy: catalog, users with latent interests, and their sessions.

Everything is a function of (config, block number): block ``b`` of users or items draws from its own
random stream seeded by ``(seed, stream, b)``, so any worker can build any block without the others,
output is the same however Spark splits the work, and memory per task is bounded by the block size.
The numeric side of the catalog (:func:`item_core`) is small and every worker rebuilds it once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from shoprec import schemas as S
from shoprec.config import GeneratorConfig
from shoprec.datagen import vocab

# Random streams: one integer per purpose, so adding a purpose never shifts another's numbers.
_ITEMS, _POPULARITY, _USERS, _IDS, _BRANDS, _LEAF_PRICES, _TEXT = 1, 2, 3, 4, 10, 11, 12
BRANDS_PER_TOP = 8

#: Funnel probabilities before personal affinity scales them (mean affinity factor is about 1).
P_SEARCH = 0.35
P_CLICK = 0.45
P_CART = 0.30
P_PURCHASE = 0.55
P_REVIEW = 0.35


def n_items(cfg: GeneratorConfig) -> int:
    return max(10, round(cfg.items * cfg.scale))


def n_users(cfg: GeneratorConfig) -> int:
    return max(1, round(cfg.users * cfg.scale))


def item_id(index: int | NDArray[Any]) -> str | NDArray[Any]:
    """Shop-style item ids (``itm-0000123``)."""
    if isinstance(index, np.ndarray):
        return np.char.add("itm-", np.char.zfill(index.astype(str), 7))
    return f"itm-{index:07d}"


def user_id(index: int) -> str:
    return f"cust-{index:08d}"


@dataclass(frozen=True)
class Brands:
    names: tuple[str, ...]
    top: NDArray[Any]  # top-category index of each brand
    quality: NDArray[Any]
    premium: NDArray[Any]


@functools.lru_cache(maxsize=4)
def brands(seed: int) -> Brands:
    rng = np.random.default_rng([seed, _BRANDS])
    names: list[str] = []
    tops: list[int] = []
    for t, _top in enumerate(vocab.TOPS):
        while len(names) < (t + 1) * BRANDS_PER_TOP:
            parts = rng.choice(vocab.BRAND_SYLLABLES, size=int(rng.integers(2, 4)))
            name = "".join(parts).capitalize()
            if name not in names:
                names.append(name)
                tops.append(t)
    n = len(names)
    return Brands(
        names=tuple(names),
        top=np.array(tops),
        quality=rng.normal(0.0, 0.6, n),
        premium=rng.lognormal(0.0, 0.25, n),
    )


@functools.lru_cache(maxsize=4)
def leaf_base_prices(seed: int) -> NDArray[Any]:
    rng = np.random.default_rng([seed, _LEAF_PRICES])
    prices: NDArray[Any] = np.exp(rng.uniform(math.log(6), math.log(400), len(vocab.leaves())))
    return prices


@dataclass(frozen=True)
class ItemCore:
    """The numbers behind every catalog item, indexed by item number."""

    leaf: NDArray[Any]
    brand: NDArray[Any]
    price: NDArray[Any]
    quality: NDArray[Any]
    launch_day: NDArray[Any]  # days after start_date; negative: launched before the span
    stock: NDArray[Any]
    discount_pct: NDArray[Any]
    popularity: NDArray[Any]  # Zipf-like weight


def _item_block(cfg: GeneratorConfig, block: int) -> dict[str, NDArray[Any]]:
    lo = block * cfg.items_per_block
    hi = min(n_items(cfg), lo + cfg.items_per_block)
    n = hi - lo
    rng = np.random.default_rng([cfg.seed, _ITEMS, block])
    b = brands(cfg.seed)
    leaves = vocab.leaves()
    leaf_top = np.array([vocab.TOPS.index(leaf.top) for leaf in leaves])
    leaf = rng.integers(0, len(leaves), n)
    brand = leaf_top[leaf] * BRANDS_PER_TOP + rng.integers(0, BRANDS_PER_TOP, n)
    raw_price = leaf_base_prices(cfg.seed)[leaf] * b.premium[brand] * rng.lognormal(0.0, 0.35, n)
    price = np.maximum(np.floor(raw_price), 1.0) + 0.99
    is_new = rng.random(n) < cfg.new_item_fraction
    launch = np.where(is_new, rng.integers(0, cfg.days, n), -rng.integers(1, 720, n))
    stock = np.where(rng.random(n) < 0.06, 0, rng.integers(1, 500, n))
    discount = np.where(rng.random(n) < 0.12, rng.choice([10.0, 15.0, 20.0, 25.0, 30.0], n), 0.0)
    quality = b.quality[brand] + rng.normal(0.0, 0.5, n)
    return {
        "leaf": leaf,
        "brand": brand,
        "price": price,
        "quality": quality,
        "launch_day": launch,
        "stock": stock,
        "discount_pct": discount,
    }


def n_item_blocks(cfg: GeneratorConfig) -> int:
    return math.ceil(n_items(cfg) / cfg.items_per_block)


def n_user_blocks(cfg: GeneratorConfig) -> int:
    return math.ceil(n_users(cfg) / cfg.users_per_block)


@functools.lru_cache(maxsize=2)
def item_core(cfg: GeneratorConfig) -> ItemCore:
    """The whole catalog's numbers (no text): what every user block samples items from."""
    parts = [_item_block(cfg, b) for b in range(n_item_blocks(cfg))]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    rank = np.random.default_rng([cfg.seed, _POPULARITY]).permutation(n_items(cfg))
    popularity = (rank + 1.0) ** -cfg.zipf_exponent
    return ItemCore(popularity=popularity, **cols)


def _start(cfg: GeneratorConfig) -> datetime:
    return datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=UTC)


def catalog_block(cfg: GeneratorConfig, block: int) -> pd.DataFrame:
    """Catalog rows (raw contract columns) for one block of items, text included."""
    core = item_core(cfg)
    lo = block * cfg.items_per_block
    hi = min(n_items(cfg), lo + cfg.items_per_block)
    rng = np.random.default_rng([cfg.seed, _TEXT, block])
    leaves = vocab.leaves()
    b = brands(cfg.seed)
    start = _start(cfg)
    rows = []
    for i in range(lo, hi):
        leaf = leaves[core.leaf[i]]
        brand = b.names[core.brand[i]]
        noun = str(rng.choice(leaf.nouns))
        adj, adj2 = (str(a) for a in rng.choice(vocab.ADJECTIVES[leaf.top], 2, replace=False))
        feat, feat2 = (str(f) for f in rng.choice(vocab.FEATURES[leaf.top], 2, replace=False))
        model = f"{rng.choice(list('ABCDEFGHKLMNPRSTX'))}{rng.integers(10, 990)}"
        title = f"{brand} {adj.capitalize()} {noun.title()} {model}"
        description = (
            f"The {brand} {noun} is a {adj} and {adj2} choice in {leaf.name.lower()}. "
            f"Shoppers mention its {feat} and {feat2}. Part of our {leaf.sub.lower()} range in {leaf.top}."
        )
        launch = start + timedelta(days=int(core.launch_day[i]))
        updated = launch + timedelta(hours=int(rng.integers(1, 48)))
        rows.append(
            {
                S.ITEM_ID: item_id(i),
                S.TITLE: title,
                S.DESCRIPTION: description,
                S.CATEGORY_PATH: leaf.path,
                S.BRAND: brand,
                S.PRICE: float(core.price[i]),
                S.CURRENCY: "USD",
                S.STOCK: int(core.stock[i]),
                S.DISCOUNT_PCT: float(core.discount_pct[i]),
                S.LAUNCH_DATE: launch.date(),
                S.UPDATED_AT: updated,
                # the synthetic shop keeps no links between items: the relations stay empty
                S.COMPLEMENTS: None,
                S.SUBSTITUTES: None,
            }
        )
    return pd.DataFrame(rows, columns=[f.name for f in S.RAW_CATALOG_SCHEMA.fields])


@functools.lru_cache(maxsize=2)
def _items_by_leaf(cfg: GeneratorConfig) -> tuple[NDArray[Any], ...]:
    core = item_core(cfg)
    order = np.argsort(core.leaf, kind="stable")
    bounds = np.searchsorted(core.leaf[order], np.arange(len(vocab.leaves()) + 1))
    return tuple(order[bounds[k] : bounds[k + 1]] for k in range(len(vocab.leaves())))


_HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 7, 7, 6, 6, 6, 7, 9, 10, 10, 8, 5, 2], float)
_HOUR_P = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()


def _review_text(rng: np.random.Generator, rating: int, leaf: vocab.Leaf, noun: str) -> str:
    feature = str(rng.choice(vocab.FEATURES[leaf.top]))
    if rating >= 4:
        return f"{str(rng.choice(vocab.POSITIVE)).capitalize()}! The {feature} of this {noun} is great."
    if rating == 3:
        return f"{str(rng.choice(vocab.NEUTRAL)).capitalize()}. The {feature} of this {noun} is acceptable."
    return f"{str(rng.choice(vocab.NEGATIVE)).capitalize()}. The {feature} of this {noun} is bad."


def events_block(cfg: GeneratorConfig, block: int) -> pd.DataFrame:
    """Behaviour events (raw contract columns plus ``event_date``) of one block of users.

    Each user has latent interests (a few top categories, a distribution over their leaves, two
    favourite brands, a price band) and an activity level. Each session picks a leaf by interest,
    maybe searches, views items drawn by popularity × affinity, and walks the funnel
    view → click → add-to-cart → purchase, sometimes followed by a review days later.
    """
    core = item_core(cfg)
    by_leaf = _items_by_leaf(cfg)
    leaves = vocab.leaves()
    b = brands(cfg.seed)
    base_price = leaf_base_prices(cfg.seed)
    leaf_top = np.array([vocab.TOPS.index(leaf.top) for leaf in leaves])
    leaf_mass = np.array([core.popularity[ix].sum() for ix in by_leaf]) + 1e-12
    leaf_mass /= leaf_mass.sum()
    rng = np.random.default_rng([cfg.seed, _USERS, block])
    lo = block * cfg.users_per_block
    hi = min(n_users(cfg), lo + cfg.users_per_block)
    start = _start(cfg)
    end_s = cfg.days * 86400

    rows: list[tuple[object, ...]] = []

    def emit(t: float, etype: str, uid: str, sid: str, item: int | None, **extra: object) -> None:
        rows.append(
            (
                etype,
                t,
                uid,
                sid,
                None if item is None else item_id(item),
                extra.get("query"),
                extra.get("price"),
                extra.get("quantity"),
                extra.get("rating"),
                extra.get("review_text"),
                extra.get("channel"),
            )
        )

    for u in range(lo, hi):
        uid = user_id(u)
        k = 1 + int(rng.binomial(2, 0.3))
        tops = rng.choice(len(vocab.TOPS), k, replace=False)
        mine = np.flatnonzero(np.isin(leaf_top, tops))
        # Interest in a leaf scales with the leaf's total popularity, so that item popularity over
        # the whole shop stays Zipf-like rather than flattening to "every leaf equally busy".
        taste = rng.dirichlet(np.full(len(mine), 0.5)) * leaf_mass[mine]
        leaf_p = 0.05 * leaf_mass.copy()
        leaf_p[mine] += 0.95 * taste / taste.sum()
        leaf_p /= leaf_p.sum()
        top_brands = np.flatnonzero(np.isin(b.top, tops))
        favourite = rng.choice(top_brands, 2, replace=False)
        price_pref = float(rng.choice([-0.5, 0.0, 0.5]))
        activity = rng.lognormal(-0.32, 0.8)  # mean about 1
        n_sessions = int(rng.poisson(cfg.sessions_per_user * activity))
        for _ in range(n_sessions):
            day = int(rng.integers(0, cfg.days))
            t = day * 86400 + int(rng.choice(24, p=_HOUR_P)) * 3600 + float(rng.uniform(0, 3600))
            sid = f"s{rng.integers(0, 2**62):016x}"
            channel = str(rng.choice(S.CHANNELS, p=[0.55, 0.4, 0.05]))
            leaf_i = int(rng.choice(len(leaves), p=leaf_p))
            cands = by_leaf[leaf_i]
            cands = cands[core.launch_day[cands] <= day]
            if len(cands) == 0:
                continue
            log_rel = np.log(core.price[cands] / base_price[leaf_i]) - price_pref
            price_match = np.exp(-(log_rel**2) / (2 * 0.35**2))
            fav = np.isin(core.brand[cands], favourite)
            # affinity in [0, 1]: how well the item fits this user's price band and brands
            affinity = 0.6 * price_match + 0.4 * fav
            weight = core.popularity[cands] * (1.0 + 2.0 * affinity)
            leaf = leaves[leaf_i]
            if rng.random() < P_SEARCH:
                noun = str(rng.choice(leaf.nouns))
                words = [noun]
                if rng.random() < 0.4:
                    words.insert(0, str(rng.choice(vocab.ADJECTIVES[leaf.top])))
                if rng.random() < 0.25:
                    words.insert(0, b.names[int(rng.choice(favourite))].lower())
                emit(t, S.SEARCH, uid, sid, None, query=" ".join(words), channel=channel)
                t += float(rng.exponential(20))
            # Views are drawn with replacement (people come back to an item), so each view's item
            # follows popularity × affinity exactly, and shop-wide popularity keeps its Zipf slope.
            n_views = 1 + int(rng.poisson(2.5))
            for j in rng.choice(len(cands), n_views, p=weight / weight.sum()):
                item = int(cands[j])
                factor = 0.6 + 0.8 * float(affinity[j])
                emit(t, S.VIEW, uid, sid, item, channel=channel)
                t += float(rng.exponential(40))
                if rng.random() >= P_CLICK * factor:
                    continue
                emit(t, S.CLICK, uid, sid, item, channel=channel)
                t += float(rng.exponential(60))
                if rng.random() >= P_CART * factor:
                    continue
                paid = round(float(core.price[item]) * (1 - core.discount_pct[item] / 100), 2)
                emit(t, S.ADD_TO_CART, uid, sid, item, price=paid, quantity=1, channel=channel)
                t += float(rng.exponential(90))
                if rng.random() >= P_PURCHASE * math.sqrt(factor):
                    continue
                qty = 2 if rng.random() < 0.1 else 1
                emit(t, S.PURCHASE, uid, sid, item, price=paid, quantity=qty, channel=channel)
                if rng.random() < P_REVIEW:
                    t_review = t + float(rng.integers(1, 10)) * 86400 + float(rng.uniform(0, 86400))
                    if t_review < end_s:
                        score = 3.7 + 0.9 * core.quality[item] + 1.2 * (affinity[j] - 0.5)
                        rating = int(np.clip(round(score + rng.normal(0, 0.9)), 1, 5))
                        text = _review_text(rng, rating, leaf, str(rng.choice(leaf.nouns)))
                        emit(
                            t_review, S.REVIEW, uid, sid, item, rating=rating, review_text=text, channel="web"
                        )

    cols = [
        S.EVENT_TYPE,
        "_t",
        S.USER_ID,
        S.SESSION_ID,
        S.ITEM_ID,
        S.QUERY,
        S.PRICE,
        S.QUANTITY,
        S.RATING,
        S.REVIEW_TEXT,
        S.CHANNEL,
    ]
    df = pd.DataFrame(rows, columns=cols)
    ids = np.random.default_rng([cfg.seed, _IDS, block]).integers(0, 2**63, size=(len(df), 2), dtype=np.int64)
    df.insert(0, S.EVENT_ID, [f"{a:016x}{c:016x}" for a, c in ids])
    stamps = pd.Timestamp(start) + pd.to_timedelta(df.pop("_t").round(3), unit="s")
    df.insert(2, S.EVENT_TIME, stamps)
    df[S.EVENT_DATE] = stamps.dt.strftime("%Y-%m-%d")
    for c in (S.QUANTITY, S.RATING):
        df[c] = df[c].astype("Int32")
    df[S.PRICE] = df[S.PRICE].astype("float64")
    return df.sort_values(S.EVENT_TIME, kind="stable").reset_index(drop=True)
