"""Bad rows injected into generated data, each labelled with its defect class.

Real exports are dirty; the cleaning stage must route every bad row to quarantine with a reason.
The generator spoils a configured fraction of rows, one defect per row, and writes a label per
spoiled row (``row_key``, ``defect``) beside the data, so tests can check where each one went.
Row keys: the ``event_id`` for events; for catalog rows the ``item_id``, or the title where the
defect is a missing id, and ``item_id@updated_at`` for a stale conflicting duplicate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from shoprec import schemas as S

# Event defect classes.
DUPLICATE_EVENT_ID = "duplicate_event_id"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
UNKNOWN_ITEM = "unknown_item"
FUTURE_TIMESTAMP = "future_timestamp"
ANCIENT_TIMESTAMP = "timestamp_before_floor"
BAD_PRICE = "bad_price"
BAD_RATING = "bad_rating"
OVERSIZED_TEXT = "oversized_text"
UNDECODABLE_TEXT = "undecodable_text"
MALFORMED_RECORD = "malformed_record"
BOT_USER = "bot_user"
# Catalog defect classes (BAD_PRICE, OVERSIZED_TEXT and UNDECODABLE_TEXT apply too).
MISSING_TITLE = "missing_title"
CATALOG_MISSING_ITEM_ID = "catalog_missing_item_id"
STALE_DUPLICATE = "conflicting_catalog_duplicate"

EVENT_DEFECTS: tuple[str, ...] = (
    DUPLICATE_EVENT_ID,
    UNKNOWN_EVENT_TYPE,
    MISSING_USER_ID,
    MISSING_ITEM_ID,
    UNKNOWN_ITEM,
    FUTURE_TIMESTAMP,
    ANCIENT_TIMESTAMP,
    BAD_PRICE,
    BAD_RATING,
    OVERSIZED_TEXT,
    UNDECODABLE_TEXT,
    MALFORMED_RECORD,
    BOT_USER,
)
CATALOG_DEFECTS: tuple[str, ...] = (
    STALE_DUPLICATE,
    BAD_PRICE,
    MISSING_TITLE,
    CATALOG_MISSING_ITEM_ID,
    OVERSIZED_TEXT,
    UNDECODABLE_TEXT,
)

#: Text longer than this is "oversized" (the cleaning stage's default limit is far below it).
OVERSIZED_CHARS = 100_000
#: What a decoder leaves where bytes could not be decoded.
REPLACEMENT = "\ufffd"
#: Column marking rows whose serialised form must be broken (JSON: truncated; CSV: a text number).
MALFORMED_FLAG = "_malformed"
BOT_EVENTS_PER_DAY = 600


#: The event defects in the order a row's applicable ones are numbered when one is drawn.
_EVENT_DRAW_ORDER: tuple[str, ...] = (
    DUPLICATE_EVENT_ID,
    UNKNOWN_EVENT_TYPE,
    MISSING_USER_ID,
    FUTURE_TIMESTAMP,
    ANCIENT_TIMESTAMP,
    MALFORMED_RECORD,
    MISSING_ITEM_ID,
    UNKNOWN_ITEM,
    BAD_PRICE,
    BAD_RATING,
    OVERSIZED_TEXT,
    UNDECODABLE_TEXT,
)


def _applicable(rows: pd.DataFrame, allow_malformed: bool) -> NDArray[np.bool_]:
    """Which defects each row can carry (rows × ``_EVENT_DRAW_ORDER``): one that would not show
    (a bad price on a view, which has none) is never drawn, so every label is a visible defect."""
    etype = rows[S.EVENT_TYPE].to_numpy()
    has_text = (etype == S.REVIEW) | (etype == S.SEARCH)
    always = np.ones(len(rows), bool)
    columns = {
        DUPLICATE_EVENT_ID: always,
        UNKNOWN_EVENT_TYPE: always,
        MISSING_USER_ID: always,
        FUTURE_TIMESTAMP: always,
        ANCIENT_TIMESTAMP: always,
        MALFORMED_RECORD: always & allow_malformed,
        MISSING_ITEM_ID: etype != S.SEARCH,
        UNKNOWN_ITEM: etype != S.SEARCH,
        BAD_PRICE: rows[S.PRICE].notna().to_numpy(),
        BAD_RATING: etype == S.REVIEW,
        OVERSIZED_TEXT: has_text,
        UNDECODABLE_TEXT: has_text,
    }
    return np.stack([columns[d] for d in _EVENT_DRAW_ORDER], axis=1)


def _spoil_text(text: str, defect: str) -> str:
    if defect == OVERSIZED_TEXT:
        return (text + " ") * (OVERSIZED_CHARS // max(1, len(text)) + 1)
    cut = len(text) // 2
    return text[:cut] + REPLACEMENT * 2 + text[cut:]


def spoil_events(
    events: pd.DataFrame, rate: float, rng: np.random.Generator, allow_malformed: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spoil about ``rate`` of the rows (one defect each); return (events, labels).

    ``events`` carries ``event_date`` (the export partition), which a defect never changes: a row
    with a wrong timestamp still arrives in the file of the day it was exported. Each defect is
    applied to all its rows at once.
    """
    events = events.reset_index(drop=True)
    events[MALFORMED_FLAG] = False
    if rate <= 0 or events.empty:
        return events, pd.DataFrame({S.ROW_KEY: [], S.DEFECT: []}, dtype=str)
    n_bad = int(rng.binomial(len(events), rate))
    chosen = np.sort(rng.choice(len(events), size=min(n_bad, len(events)), replace=False))
    original = events.iloc[chosen]
    allowed = _applicable(original, allow_malformed)
    # the k-th applicable defect of each row, k uniform over that row's count
    nth = (rng.random(len(chosen)) * allowed.sum(axis=1)).astype(np.int64)
    which = (np.cumsum(allowed, axis=1) <= nth[:, None]).sum(axis=1)
    defect = np.array(_EVENT_DRAW_ORDER, dtype=object)[which]
    labels = pd.DataFrame({S.ROW_KEY: original[S.EVENT_ID].astype(str).to_numpy(), S.DEFECT: defect})

    def rows(name: str) -> NDArray[Any]:
        picked: NDArray[Any] = chosen[defect == name]
        return picked

    def at(name: str) -> int:
        return int(events.columns.get_loc(name))  # type: ignore[arg-type]

    r = rows(UNKNOWN_EVENT_TYPE)
    events.iloc[r, at(S.EVENT_TYPE)] = rng.choice(["wishlist_add", "VIEW ", "page_ping", ""], len(r))
    events.iloc[rows(MISSING_USER_ID), at(S.USER_ID)] = None
    events.iloc[rows(MISSING_ITEM_ID), at(S.ITEM_ID)] = None
    r = rows(UNKNOWN_ITEM)
    events.iloc[r, at(S.ITEM_ID)] = np.array(
        [f"itm-x{x:06d}" for x in rng.integers(0, 10**6, len(r))], dtype=object
    )
    times = events[S.EVENT_TIME].dt.tz_convert(None).to_numpy().copy()  # UTC datetime64
    r = rows(FUTURE_TIMESTAMP)
    times[r] += rng.integers(400, 20000, len(r)).astype("timedelta64[D]")
    r = rows(ANCIENT_TIMESTAMP)
    times[r] = np.datetime64("1970-01-01", "ns") + rng.integers(0, 86400 * 365, len(r)).astype(
        "timedelta64[s]"
    )
    events[S.EVENT_TIME] = pd.DatetimeIndex(times).tz_localize("UTC")
    r = rows(BAD_PRICE)
    price = events[S.PRICE].to_numpy()[r]
    events.iloc[r, at(S.PRICE)] = np.choose(
        rng.integers(0, 3, len(r)), [np.zeros(len(r)), -price, np.full(len(r), 9.99e9)]
    )
    r = rows(BAD_RATING)
    events.iloc[r, at(S.RATING)] = rng.choice([0, 6, 10, -1], len(r))
    for name in (OVERSIZED_TEXT, UNDECODABLE_TEXT):
        for pos in rows(name):
            col = S.QUERY if events.iat[pos, at(S.EVENT_TYPE)] == S.SEARCH else S.REVIEW_TEXT
            events.iat[pos, at(col)] = _spoil_text(str(events.iat[pos, at(col)]), name)
    events.iloc[rows(MALFORMED_RECORD), at(MALFORMED_FLAG)] = True
    # a resent copy of the row as it was; the label names the id that appears twice
    dupes = original[defect == DUPLICATE_EVENT_ID].assign(**{MALFORMED_FLAG: False})
    if len(dupes):
        events = pd.concat([events, dupes], ignore_index=True)
    return events, labels


def bot_events(
    template: pd.DataFrame, user: str, day: pd.Timestamp, rng: np.random.Generator
) -> pd.DataFrame:
    """A scraper: hundreds of views in one day by one user, over the items seen in ``template``."""
    items = template[S.ITEM_ID].dropna().unique()
    if len(items) == 0:
        return template.iloc[0:0]
    n = BOT_EVENTS_PER_DAY + int(rng.integers(0, 200))
    seconds = np.sort(rng.uniform(0, 86400, n))
    ids = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    times = day + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            S.EVENT_ID: [f"{a:016x}{c:016x}" for a, c in ids],
            S.EVENT_TYPE: S.VIEW,
            S.EVENT_TIME: times,
            S.USER_ID: user,
            S.SESSION_ID: f"s{rng.integers(0, 2**62):016x}",
            S.ITEM_ID: rng.choice(items, n),
            S.CHANNEL: "web",
            S.EVENT_DATE: times.strftime("%Y-%m-%d"),
        }
    )


def spoil_catalog(
    catalog: pd.DataFrame, rate: float, rng: np.random.Generator, id_prefix: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add bad catalog rows: stale conflicting versions of real items, and broken phantom items.

    Phantom items (ids no event refers to) carry the defects that would otherwise cascade into
    the events of a real item, so every label stays one row's story.
    """
    if rate <= 0 or catalog.empty:
        return catalog, pd.DataFrame({S.ROW_KEY: [], S.DEFECT: []}, dtype=str)
    n_bad = int(rng.binomial(len(catalog), rate))
    rows: list[dict[str, object]] = []
    labels: list[tuple[str, str]] = []
    for k in range(n_bad):
        src = catalog.iloc[int(rng.integers(0, len(catalog)))].to_dict()
        defect = str(rng.choice(CATALOG_DEFECTS))
        if defect == STALE_DUPLICATE:
            src[S.UPDATED_AT] = src[S.UPDATED_AT] - timedelta(hours=int(rng.integers(1, 500)))
            src[S.PRICE] = round(float(src[S.PRICE]) * float(rng.uniform(0.6, 1.4)), 2)
            src[S.STOCK] = int(rng.integers(0, 50))
            key = f"{src[S.ITEM_ID]}@{pd.Timestamp(src[S.UPDATED_AT]).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        else:
            src[S.ITEM_ID] = f"{id_prefix}{k:05d}"
            src[S.TITLE] = f"{src[S.TITLE]} (defect sample {id_prefix}{k:05d})"
            key = str(src[S.ITEM_ID])
            if defect == BAD_PRICE:
                src[S.PRICE] = float(rng.choice([0.0, -12.5, 4.2e8]))
            elif defect == MISSING_TITLE:
                src[S.TITLE] = None
            elif defect == CATALOG_MISSING_ITEM_ID:
                src[S.ITEM_ID] = None
                key = str(src[S.TITLE])
            elif defect == OVERSIZED_TEXT:
                src[S.DESCRIPTION] = (str(src[S.DESCRIPTION]) + " ") * (OVERSIZED_CHARS // 100 + 1)
            elif defect == UNDECODABLE_TEXT:
                src[S.TITLE] = str(src[S.TITLE]).replace(" ", REPLACEMENT, 2)
                key = str(src[S.ITEM_ID])
        rows.append(src)
        labels.append((key, defect))
    labelled = pd.DataFrame(labels, columns=[S.ROW_KEY, S.DEFECT])
    if not rows:  # a block without defects: pandas warns on concatenating an empty frame
        return catalog.reset_index(drop=True), labelled
    out = pd.concat([catalog, pd.DataFrame(rows, columns=catalog.columns)], ignore_index=True)
    return out, labelled
