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


def _applicable(row: pd.Series[Any], allow_malformed: bool) -> list[str]:
    out = [DUPLICATE_EVENT_ID, UNKNOWN_EVENT_TYPE, MISSING_USER_ID, FUTURE_TIMESTAMP, ANCIENT_TIMESTAMP]
    if allow_malformed:
        out.append(MALFORMED_RECORD)
    if row[S.EVENT_TYPE] != S.SEARCH:
        out += [MISSING_ITEM_ID, UNKNOWN_ITEM]
    if pd.notna(row[S.PRICE]):
        out.append(BAD_PRICE)
    if row[S.EVENT_TYPE] == S.REVIEW:
        out.append(BAD_RATING)
    if row[S.EVENT_TYPE] in (S.REVIEW, S.SEARCH):
        out += [OVERSIZED_TEXT, UNDECODABLE_TEXT]
    return out


def spoil_events(
    events: pd.DataFrame, rate: float, rng: np.random.Generator, allow_malformed: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spoil about ``rate`` of the rows (one defect each); return (events, labels).

    ``events`` carries ``event_date`` (the export partition), which a defect never changes: a row
    with a wrong timestamp still arrives in the file of the day it was exported.
    """
    events = events.copy()
    events[MALFORMED_FLAG] = False
    if rate <= 0 or events.empty:
        return events, pd.DataFrame({S.ROW_KEY: [], S.DEFECT: []}, dtype=str)
    n_bad = int(rng.binomial(len(events), rate))
    chosen = rng.choice(len(events), size=min(n_bad, len(events)), replace=False)
    labels: list[tuple[str, str]] = []
    extra: list[pd.Series[Any]] = []
    for pos in sorted(chosen):
        idx = events.index[pos]
        row = events.loc[idx]
        defect = str(rng.choice(_applicable(row, allow_malformed)))
        labels.append((str(row[S.EVENT_ID]), defect))
        if defect == DUPLICATE_EVENT_ID:
            extra.append(row.copy())  # a resent copy; the label names the id that appears twice
        elif defect == UNKNOWN_EVENT_TYPE:
            events.at[idx, S.EVENT_TYPE] = str(rng.choice(["wishlist_add", "VIEW ", "page_ping", ""]))
        elif defect == MISSING_USER_ID:
            events.at[idx, S.USER_ID] = None
        elif defect == MISSING_ITEM_ID:
            events.at[idx, S.ITEM_ID] = None
        elif defect == UNKNOWN_ITEM:
            events.at[idx, S.ITEM_ID] = f"itm-x{rng.integers(0, 10**6):06d}"
        elif defect == FUTURE_TIMESTAMP:
            events.at[idx, S.EVENT_TIME] = row[S.EVENT_TIME] + timedelta(days=int(rng.integers(400, 20000)))
        elif defect == ANCIENT_TIMESTAMP:
            events.at[idx, S.EVENT_TIME] = pd.Timestamp("1970-01-01", tz="UTC") + timedelta(
                seconds=int(rng.integers(0, 86400 * 365))
            )
        elif defect == BAD_PRICE:
            events.at[idx, S.PRICE] = float(rng.choice([0.0, -row[S.PRICE], 9.99e9]))
        elif defect == BAD_RATING:
            events.at[idx, S.RATING] = int(rng.choice([0, 6, 10, -1]))
        elif defect in (OVERSIZED_TEXT, UNDECODABLE_TEXT):
            col = S.QUERY if row[S.EVENT_TYPE] == S.SEARCH else S.REVIEW_TEXT
            text = str(row[col])
            if defect == OVERSIZED_TEXT:
                events.at[idx, col] = (text + " ") * (OVERSIZED_CHARS // max(1, len(text)) + 1)
            else:
                cut = len(text) // 2
                events.at[idx, col] = text[:cut] + REPLACEMENT * 2 + text[cut:]
        elif defect == MALFORMED_RECORD:
            events.at[idx, MALFORMED_FLAG] = True
    if extra:
        dupes = pd.DataFrame(extra).astype(events.dtypes.to_dict())
        dupes[MALFORMED_FLAG] = False
        events = pd.concat([events, dupes], ignore_index=True)
    return events, pd.DataFrame(labels, columns=[S.ROW_KEY, S.DEFECT])


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
