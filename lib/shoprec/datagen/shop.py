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
        return item_ids(index)
    return f"itm-{index:07d}"


def item_ids(index: NDArray[Any]) -> NDArray[Any]:
    """:func:`item_id` of each item number, formatted once per distinct item."""
    uniq, inverse = np.unique(index, return_inverse=True)
    names: NDArray[Any] = np.array([f"itm-{i:07d}" for i in uniq], dtype=object)[inverse]
    return names.reshape(index.shape)


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


_HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 7, 7, 6, 6, 6, 7, 9, 10, 10, 8, 5, 2], float)
_HOUR_P = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()


#: Views in a leaf × items in that leaf sampled at once; bounds a block's memory on huge catalogs.
_SAMPLE_CELLS = 4_000_000


def hex_ids(values: NDArray[Any], prefix: str = "") -> NDArray[Any]:
    """Fixed-width lower-case hex of 64-bit integers: row ``[a, c]`` gives ``f"{a:016x}{c:016x}"``.

    Negative numbers read as their two's complement. One bytes buffer is hex-encoded for the
    whole array instead of one format call per row.
    """
    rows = np.ascontiguousarray(values if values.ndim == 2 else values.reshape(-1, 1)).astype(">u8")
    width = 16 * rows.shape[1]
    if not len(rows):  # a block without sessions (a shop smaller than its blocks)
        return np.array([], dtype=object)
    text = np.frombuffer(rows.tobytes().hex().encode("ascii"), dtype=f"S{width}").astype(str)
    out: NDArray[Any] = text.astype(object)
    return prefix + out if prefix else out


@dataclass(frozen=True)
class _Words:
    """A ragged table of words per group (nouns per leaf, adjectives per top), picked by uniforms."""

    start: NDArray[Any]
    count: NDArray[Any]
    flat: NDArray[Any]

    @classmethod
    def of(cls, groups: list[tuple[str, ...]]) -> _Words:
        count = np.array([len(g) for g in groups])
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        return cls(start=start, count=count, flat=np.array([w for g in groups for w in g], dtype=object))

    def pick(self, group: NDArray[Any], u: NDArray[Any]) -> NDArray[Any]:
        picked: NDArray[Any] = self.flat[self.start[group] + (u * self.count[group]).astype(np.int64)]
        return picked


@dataclass(frozen=True)
class _Context:
    """Tables every user block reads, built once per worker from the catalog numbers."""

    leaf_top: NDArray[Any]  # top-category index of each leaf
    leaf_mass: NDArray[Any]  # share of all popularity in each leaf
    by_leaf: tuple[NDArray[Any], ...]  # item numbers of each leaf
    first_launch: NDArray[Any]  # the day a leaf's first item launches
    nouns: _Words  # by leaf
    adjectives: _Words  # by top
    features: _Words  # by top
    brand_names: NDArray[Any]  # lower case, by brand


@functools.lru_cache(maxsize=2)
def _context(cfg: GeneratorConfig) -> _Context:
    core = item_core(cfg)
    leaves = vocab.leaves()
    order = np.argsort(core.leaf, kind="stable")
    bounds = np.searchsorted(core.leaf[order], np.arange(len(leaves) + 1))
    by_leaf = tuple(order[bounds[k] : bounds[k + 1]] for k in range(len(leaves)))
    mass = np.array([core.popularity[ix].sum() for ix in by_leaf]) + 1e-12
    return _Context(
        leaf_top=np.array([vocab.TOPS.index(leaf.top) for leaf in leaves]),
        leaf_mass=mass / mass.sum(),
        by_leaf=by_leaf,
        first_launch=np.array([core.launch_day[ix].min() if len(ix) else cfg.days for ix in by_leaf]),
        nouns=_Words.of([leaf.nouns for leaf in leaves]),
        adjectives=_Words.of([vocab.ADJECTIVES[t] for t in vocab.TOPS]),
        features=_Words.of([vocab.FEATURES[t] for t in vocab.TOPS]),
        brand_names=np.array([name.lower() for name in brands(cfg.seed).names], dtype=object),
    )


def _sample_views(
    cfg: GeneratorConfig,
    ctx: _Context,
    leaf: NDArray[Any],
    day: NDArray[Any],
    price_pref: NDArray[Any],
    favourite: NDArray[Any],
    u: NDArray[Any],
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The item of each view and its affinity: a draw by popularity × affinity among launched items.

    Affinity in [0, 1] is how well an item fits the user's price band and favourite brands. Views
    are grouped by leaf and each group drawn by inverse CDF over a (views × leaf items) weight
    matrix, in chunks of at most ``_SAMPLE_CELLS`` cells.
    """
    core = item_core(cfg)
    base_price = leaf_base_prices(cfg.seed)
    item = np.zeros(len(u), dtype=np.int64)
    affinity = np.zeros(len(u))
    order = np.argsort(leaf, kind="stable")
    bounds = np.searchsorted(leaf[order], np.arange(len(ctx.by_leaf) + 1))
    for leaf_i, cands in enumerate(ctx.by_leaf):
        in_leaf = order[bounds[leaf_i] : bounds[leaf_i + 1]]
        if len(in_leaf) == 0:
            continue
        log_price = np.log(core.price[cands] / base_price[leaf_i])
        pop, brand, launch = core.popularity[cands], core.brand[cands], core.launch_day[cands]
        step = max(1, _SAMPLE_CELLS // len(cands))
        for k in range(0, len(in_leaf), step):
            rows = in_leaf[k : k + step]
            price_match = np.exp(-((log_price[None, :] - price_pref[rows, None]) ** 2) / (2 * 0.35**2))
            fav = (brand[None, :] == favourite[rows, :1]) | (brand[None, :] == favourite[rows, 1:])
            aff = 0.6 * price_match + 0.4 * fav
            weight = pop[None, :] * (1.0 + 2.0 * aff) * (launch[None, :] <= day[rows, None])
            cdf = np.cumsum(weight, axis=1)
            pick = np.minimum((cdf < (u[rows] * cdf[:, -1])[:, None]).sum(axis=1), len(cands) - 1)
            item[rows] = cands[pick]
            affinity[rows] = aff[np.arange(len(rows)), pick]
    return item, affinity


def _review_texts(ctx: _Context, rating: NDArray[Any], leaf: NDArray[Any], u: NDArray[Any]) -> list[str]:
    feature = ctx.features.pick(ctx.leaf_top[leaf], u[:, 0])
    noun = ctx.nouns.pick(leaf, u[:, 1])
    out = []
    words: tuple[str, ...]
    for r, f, nn, x in zip(rating, feature, noun, u[:, 2], strict=True):
        if r >= 4:
            words, tail = vocab.POSITIVE, f"! The {f} of this {nn} is great."
        elif r == 3:
            words, tail = vocab.NEUTRAL, f". The {f} of this {nn} is acceptable."
        else:
            words, tail = vocab.NEGATIVE, f". The {f} of this {nn} is bad."
        out.append(words[int(x * len(words))].capitalize() + tail)
    return out


def events_block(cfg: GeneratorConfig, block: int) -> pd.DataFrame:
    """Behaviour events (raw contract columns plus ``event_date``) of one block of users.

    Each user has latent interests (a few top categories, a distribution over their leaves, two
    favourite brands, a price band) and an activity level. Each session picks a leaf by interest,
    maybe searches, views items drawn by popularity × affinity, and walks the funnel
    view → click → add-to-cart → purchase, sometimes followed by a review days later.

    Each draw is one numpy call over the whole block (users, then sessions, then views), so an
    event costs a few array operations rather than a turn of a Python loop; the block's own
    random stream alone decides its rows.
    """
    core = item_core(cfg)
    ctx = _context(cfg)
    b = brands(cfg.seed)
    rng = np.random.default_rng([cfg.seed, _USERS, block])
    lo = block * cfg.users_per_block
    n = max(0, min(n_users(cfg), lo + cfg.users_per_block) - lo)
    n_leaves = len(ctx.leaf_top)

    # Users: k distinct top categories; a Dirichlet(0.5) taste over their leaves, weighted by
    # each leaf's popularity so that shop-wide popularity stays Zipf-like rather than flattening
    # to "every leaf equally busy"; two favourite brands of those tops; a price band; activity.
    k = 1 + rng.binomial(2, 0.3, n)
    has_top = np.argsort(np.argsort(rng.random((n, len(vocab.TOPS))), axis=1), axis=1) < k[:, None]
    taste = rng.standard_gamma(0.5, (n, n_leaves)) * has_top[:, ctx.leaf_top] * ctx.leaf_mass
    taste /= np.maximum(taste.sum(axis=1, keepdims=True), 1e-300)
    leaf_p = 0.05 * ctx.leaf_mass + 0.95 * taste
    leaf_cdf = np.cumsum(leaf_p / leaf_p.sum(axis=1, keepdims=True), axis=1)
    favourite = np.argsort(np.where(has_top[:, b.top], rng.random((n, len(b.names))), 2.0), axis=1)[:, :2]
    price_pref = rng.choice([-0.5, 0.0, 0.5], n)
    activity = rng.lognormal(-0.32, 0.8, n)  # mean about 1
    n_sessions = rng.poisson(cfg.sessions_per_user * activity)

    # Sessions: a day, an hour by the shop's daily curve, a channel, a leaf by interest. A session
    # in a leaf with nothing launched yet ends before it starts.
    su = np.repeat(np.arange(n), n_sessions)
    n_s = len(su)
    day = rng.integers(0, cfg.days, n_s)
    t0 = day * 86400.0 + rng.choice(24, n_s, p=_HOUR_P) * 3600.0 + rng.uniform(0, 3600, n_s)
    sid = hex_ids(rng.integers(0, 2**62, n_s), prefix="s")
    channel = np.array(S.CHANNELS, dtype=object)[rng.choice(len(S.CHANNELS), n_s, p=[0.55, 0.4, 0.05])]
    leaf = np.minimum((leaf_cdf[su] < rng.random(n_s)[:, None]).sum(axis=1), n_leaves - 1)
    live = ctx.first_launch[leaf] <= day
    searched = live & (rng.random(n_s) < P_SEARCH)
    u_query = rng.random((n_s, 5))
    t_first = t0 + np.where(searched, rng.exponential(20, n_s), 0.0)

    # Views, drawn with replacement (people come back to an item), so each view's item follows
    # popularity × affinity exactly and shop-wide popularity keeps its Zipf slope; then each
    # view's funnel, and the time it took.
    n_views = np.where(live, 1 + rng.poisson(2.5, n_s), 0)
    vs = np.repeat(np.arange(n_s), n_views)
    n_v = len(vs)
    item, aff = _sample_views(
        cfg, ctx, leaf[vs], day[vs], price_pref[su[vs]], favourite[su[vs]], rng.random(n_v)
    )
    factor = 0.6 + 0.8 * aff
    u = rng.random((n_v, 5))
    clicked = u[:, 0] < P_CLICK * factor
    carted = clicked & (u[:, 1] < P_CART * factor)
    bought = carted & (u[:, 2] < P_PURCHASE * np.sqrt(factor))
    gaps = rng.exponential([40.0, 60.0, 90.0], (n_v, 3))
    spent = gaps[:, 0] + clicked * gaps[:, 1] + carted * gaps[:, 2]
    before = np.cumsum(spent) - spent  # time on all earlier views of the block
    first_view = np.cumsum(n_views) - n_views
    t_view = t_first[vs] + before - before[first_view[vs]]
    t_click = t_view + gaps[:, 0]
    t_cart = t_click + gaps[:, 1]
    t_buy = t_cart + gaps[:, 2]
    paid = np.round(core.price[item] * (1 - core.discount_pct[item] / 100), 2)
    quantity = np.where(u[:, 3] < 0.1, 2, 1)
    t_review = t_buy + rng.integers(1, 10, n_v) * 86400.0 + rng.uniform(0, 86400, n_v)
    reviewed = bought & (u[:, 4] < P_REVIEW) & (t_review < cfg.days * 86400)
    score = 3.7 + 0.9 * core.quality[item] + 1.2 * (aff - 0.5)
    rating = np.clip(np.round(score + rng.normal(0, 0.9, n_v)), 1, 5).astype(np.int64)
    u_text = rng.random((n_v, 3))
    ids_rng = np.random.default_rng([cfg.seed, _IDS, block])

    # Queries: a noun of the leaf, sometimes an adjective before it, sometimes a favourite brand.
    q = np.flatnonzero(searched)
    query = ctx.nouns.pick(leaf[q], u_query[q, 0])
    adjective = ctx.adjectives.pick(ctx.leaf_top[leaf[q]], u_query[q, 1])
    query = np.where(u_query[q, 2] < 0.4, adjective + " ", "") + query
    brand = ctx.brand_names[favourite[su[q], (u_query[q, 4] < 0.5).astype(np.int64)]]
    query = np.where(u_query[q, 3] < 0.25, brand + " ", "") + query

    # One row per event; ``_order`` is the order events happen in within a session (its search,
    # then per view: view, click, cart, purchase, review), which breaks ties between equal times.
    user = np.array([user_id(i) for i in range(lo, lo + n)], dtype=object)
    frames = [_stage(S.SEARCH, q, t0[q], first_view[q] * 8 - 1, user[su[q]], sid[q], channel[q], query=query)]
    r = np.flatnonzero(reviewed)
    for stage, (etype, v, times) in enumerate(
        (
            (S.VIEW, np.arange(n_v), t_view),
            (S.CLICK, np.flatnonzero(clicked), t_click),
            (S.ADD_TO_CART, np.flatnonzero(carted), t_cart),
            (S.PURCHASE, np.flatnonzero(bought), t_buy),
            (S.REVIEW, r, t_review),
        )
    ):
        s = vs[v]
        extra: dict[str, Any] = {}
        if etype in (S.ADD_TO_CART, S.PURCHASE):
            extra = {"price": paid[v], "quantity": quantity[v] if etype == S.PURCHASE else np.ones(len(v))}
        if etype == S.REVIEW:
            text = _review_texts(ctx, rating[v], leaf[s], u_text[v])
            extra = {"rating": rating[v], "review_text": np.array(text, dtype=object)}
        ch = np.full(len(v), "web", dtype=object) if etype == S.REVIEW else channel[s]
        frames.append(
            _stage(etype, s, times[v], v * 8 + stage, user[su[s]], sid[s], ch, item=item[v], **extra)
        )
    df = pd.concat(frames, ignore_index=True)
    df["_t"] = df["_t"].round(3)
    # the span ends at midnight after its last day: a late session stops there, as a review does
    df = df[df["_t"] < cfg.days * 86400]
    df = df.sort_values(["_t", "_order"], kind="stable").reset_index(drop=True)
    ids = ids_rng.integers(0, 2**63, size=(len(df), 2), dtype=np.int64)
    df.insert(0, S.EVENT_ID, hex_ids(ids))
    seconds = df.pop("_t").to_numpy()
    df.pop("_order")
    df.insert(2, S.EVENT_TIME, pd.Timestamp(_start(cfg)) + pd.to_timedelta(seconds, unit="s"))
    dates = np.datetime64(cfg.start_date, "D") + np.floor(seconds / 86400).astype("timedelta64[D]")
    df[S.EVENT_DATE] = np.datetime_as_string(dates, unit="D").astype(object)
    return df


def _stage(
    etype: str,
    session: NDArray[Any],
    times: NDArray[Any],
    order: NDArray[Any],
    user: NDArray[Any],
    sid: NDArray[Any],
    channel: NDArray[Any],
    item: NDArray[Any] | None = None,
    query: NDArray[Any] | None = None,
    price: NDArray[Any] | None = None,
    quantity: NDArray[Any] | None = None,
    rating: NDArray[Any] | None = None,
    review_text: NDArray[Any] | None = None,
) -> pd.DataFrame:
    """The rows of one event type in the contract's columns (plus ``_t`` and ``_order``)."""
    m = len(session)
    none = np.full(m, None, dtype=object)

    def ints(values: NDArray[Any] | None) -> pd.arrays.IntegerArray:
        if values is None:
            return pd.arrays.IntegerArray(np.zeros(m, np.int32), np.ones(m, bool))
        return pd.arrays.IntegerArray(values.astype(np.int32), np.zeros(m, bool))

    return pd.DataFrame(
        {
            S.EVENT_TYPE: np.full(m, etype, dtype=object),
            "_t": times,
            "_order": order,
            S.USER_ID: user,
            S.SESSION_ID: sid,
            S.ITEM_ID: none if item is None else item_ids(item),
            S.QUERY: none if query is None else query,
            S.PRICE: np.full(m, np.nan) if price is None else price.astype(np.float64),
            S.QUANTITY: ints(quantity),
            S.RATING: ints(rating),
            S.REVIEW_TEXT: none if review_text is None else review_text,
            S.CHANNEL: channel,
        }
    )
