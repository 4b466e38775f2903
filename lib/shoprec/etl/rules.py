"""The silver cleaning rules: each one named, with the reason it gives for every row it rejects.

A rule is a pair of Spark column expressions over a bronze row: ``rejects`` (true when the row
breaks the rule) and ``reason`` (a sentence naming the value that broke it). Rules are checked in
order and a row is quarantined under the first one it breaks. Everything runs in the JVM: no
Python UDF touches a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import CleaningConfig

# Rule names (the ``rule`` column of the quarantine tables).
MALFORMED_RECORD = "malformed_record"
MISSING_EVENT_ID = "missing_event_id"
MISSING_USER_ID = "missing_user_id"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
MISSING_ITEM_ID = "missing_item_id"
MISSING_TIMESTAMP = "missing_timestamp"
TIMESTAMP_BEFORE_FLOOR = "timestamp_before_floor"
FUTURE_TIMESTAMP = "future_timestamp"
BAD_PRICE = "bad_price"
BAD_RATING = "bad_rating"
OVERSIZED_TEXT = "oversized_text"
UNDECODABLE_TEXT = "undecodable_text"
OVERSIZED_ID = "oversized_id"
UNKNOWN_ITEM = "unknown_item"
BOT_USER = "bot_user"
DUPLICATE_EVENT_ID = "duplicate_event_id"
MISSING_TITLE = "missing_title"
MISSING_CATEGORY = "missing_category"
CONFLICTING_CATALOG_DUPLICATE = "conflicting_catalog_duplicate"

#: What a decoder leaves in place of bytes it could not decode.
REPLACEMENT_CHAR = "\ufffd"
#: The most characters of a value a reason quotes (an id of 200,000 characters is not copied).
SHOWN_CHARS = 64
#: Helper columns the rules read, added by :func:`with_rule_inputs` and the silver stage.
KNOWN_ITEM = "_known_item"
USER_DAY_EVENTS = "_user_day_events"


@dataclass(frozen=True)
class Rule:
    name: str
    rejects: Column
    reason: Column


def _blank(c: str) -> Column:
    return F.col(c).isNull() | (F.trim(F.col(c)) == "")


def shown(value: Column) -> Column:
    """``value`` as a reason quotes it: whole up to :data:`SHOWN_CHARS` characters, else its start
    and its length."""
    return F.when(
        F.length(value) > SHOWN_CHARS,
        F.format_string("%s... (%d characters)", F.substring(value, 1, SHOWN_CHARS), F.length(value)),
    ).otherwise(value)


def _id_rules(columns: list[str], cfg: CleaningConfig) -> list[Rule]:
    """Ids too long to be one, and ids holding U+FFFD: bytes a decoder could not read, so two
    different raw ids could become one (and one pseudonym)."""
    longest = F.greatest(*[F.coalesce(F.length(c), F.lit(0)) for c in columns], F.lit(0))
    bad = [F.coalesce(F.col(c).contains(REPLACEMENT_CHAR), F.lit(False)) for c in columns]
    which = F.coalesce(*[F.when(b, F.lit(c)) for b, c in zip(bad, columns, strict=True)])
    return [
        Rule(
            OVERSIZED_ID,
            longest > cfg.max_id_chars,
            F.format_string(
                f"an id of %d characters exceeds cleaning.max_id_chars={cfg.max_id_chars}", longest
            ),
        ),
        Rule(
            UNDECODABLE_TEXT,
            which.isNotNull(),
            F.format_string("%s holds U+FFFD: bytes that could not be decoded", which),
        ),
    ]


def _text_rules(columns: list[str], cfg: CleaningConfig) -> list[Rule]:
    too_long = F.greatest(*[F.coalesce(F.length(c), F.lit(0)) for c in columns], F.lit(0))
    has_bad = F.lit(False)
    for c in columns:
        has_bad = has_bad | F.coalesce(F.col(c).contains(REPLACEMENT_CHAR), F.lit(False))
    return [
        Rule(
            OVERSIZED_TEXT,
            too_long > cfg.max_text_chars,
            F.format_string(
                f"text of %d characters exceeds cleaning.max_text_chars={cfg.max_text_chars}", too_long
            ),
        ),
        Rule(
            UNDECODABLE_TEXT,
            has_bad,
            F.lit(f"text holds U+FFFD: bytes that could not be decoded in one of {', '.join(columns)}"),
        ),
    ]


def _price_rule(cfg: CleaningConfig) -> Rule:
    p = F.col(S.PRICE)
    return Rule(
        BAD_PRICE,
        p.isNotNull() & ((p <= 0) | (p >= cfg.max_price) | F.isnan(p)),
        F.format_string(
            f"price %s is zero, negative, NaN or >= cleaning.max_price={cfg.max_price:g}", p.cast("string")
        ),
    )


def event_rules(cfg: CleaningConfig, now: datetime) -> list[Rule]:
    """The rules for behaviour events, in the order they are checked."""
    t, etype, rating = F.col(S.EVENT_TIME), F.col(S.EVENT_TYPE), F.col(S.RATING)
    latest = F.lit(now) + F.make_dt_interval(hours=F.lit(cfg.max_future_hours))
    floor = F.lit(cfg.time_floor).cast("timestamp")
    return [
        Rule(
            MALFORMED_RECORD,
            F.col(S.CORRUPT_RECORD).isNotNull(),
            F.lit("record does not parse against the raw event schema"),
        ),
        Rule(MISSING_EVENT_ID, _blank(S.EVENT_ID), F.lit("event_id is missing")),
        Rule(MISSING_USER_ID, _blank(S.USER_ID), F.lit("user_id is missing")),
        *_id_rules([S.EVENT_ID, S.USER_ID, S.SESSION_ID, S.ITEM_ID], cfg),
        Rule(
            UNKNOWN_EVENT_TYPE,
            etype.isNull() | ~etype.isin(*S.EVENT_TYPES),
            F.format_string(
                f"event_type %s is not one of {', '.join(S.EVENT_TYPES)}",
                shown(F.coalesce(etype, F.lit("null"))),
            ),
        ),
        Rule(
            MISSING_ITEM_ID,
            _blank(S.ITEM_ID) & (etype != S.SEARCH),
            F.format_string("a %s event has no item_id", etype),
        ),
        Rule(MISSING_TIMESTAMP, t.isNull(), F.lit("event_time is missing")),
        Rule(
            TIMESTAMP_BEFORE_FLOOR,
            t < floor,
            F.format_string(
                f"event_time %s is before cleaning.time_floor={cfg.time_floor}", t.cast("string")
            ),
        ),
        Rule(
            FUTURE_TIMESTAMP,
            t > latest,
            F.format_string(
                f"event_time %s is more than {cfg.max_future_hours:g}h after the run", t.cast("string")
            ),
        ),
        _price_rule(cfg),
        Rule(
            BAD_PRICE,
            F.lit(cfg.require_price) & etype.isin(S.ADD_TO_CART, S.PURCHASE) & F.col(S.PRICE).isNull(),
            F.format_string("a %s event has no price (or one that did not parse)", etype),
        ),
        Rule(
            BAD_RATING,
            rating.isNotNull() & ~rating.between(1, 5),  # a review without stars is text-only, not bad
            F.format_string(
                "rating %s is not an integer from 1 to 5", F.coalesce(rating.cast("string"), F.lit("null"))
            ),
        ),
        *_text_rules([S.QUERY, S.REVIEW_TEXT], cfg),
        Rule(
            UNKNOWN_ITEM,
            F.col(S.ITEM_ID).isNotNull() & ~F.col(KNOWN_ITEM),
            F.format_string("item_id %s is not in the clean catalog", shown(F.col(S.ITEM_ID))),
        ),
        Rule(
            BOT_USER,
            F.col(USER_DAY_EVENTS) > cfg.bot_events_per_day,
            F.format_string(
                f"user has %d events on this day, above cleaning.bot_events_per_day={cfg.bot_events_per_day}",
                F.col(USER_DAY_EVENTS),
            ),
        ),
    ]


def catalog_rules(cfg: CleaningConfig) -> list[Rule]:
    """The rules for catalog rows, in the order they are checked."""
    return [
        Rule(
            MALFORMED_RECORD,
            F.col(S.CORRUPT_RECORD).isNotNull(),
            F.lit("record does not parse against the raw catalog schema"),
        ),
        Rule(MISSING_ITEM_ID, _blank(S.ITEM_ID), F.lit("item_id is missing")),
        *_id_rules([S.ITEM_ID], cfg),
        Rule(MISSING_TITLE, _blank(S.TITLE), F.lit("title is missing")),
        Rule(MISSING_CATEGORY, _blank(S.CATEGORY_PATH), F.lit("category_path is missing")),
        Rule(
            BAD_PRICE,
            (F.col(S.PRICE).isNull() & F.lit(cfg.require_price))
            | (F.col(S.PRICE) <= 0)
            | (F.col(S.PRICE) >= cfg.max_price)
            | F.isnan(S.PRICE),
            F.format_string(
                f"price %s is {'missing, ' if cfg.require_price else ''}zero, negative, NaN or "
                f">= cleaning.max_price={cfg.max_price:g}",
                F.coalesce(F.col(S.PRICE).cast("string"), F.lit("null")),
            ),
        ),
        Rule(MISSING_TIMESTAMP, F.col(S.UPDATED_AT).isNull(), F.lit("updated_at is missing")),
        *_text_rules([S.TITLE, S.DESCRIPTION], cfg),
    ]


RULE_COL, REASON_COL = "_rule", "_reason"


def apply_rules(df: DataFrame, rules: list[Rule]) -> DataFrame:
    """Add ``_rule`` and ``_reason``: the first rule each row breaks, or nulls for a clean row."""
    rule: Column = F.lit(None).cast("string")
    reason: Column = F.lit(None).cast("string")
    for r in reversed(rules):  # built inside out, so the first rule in the list wins
        hit = F.coalesce(r.rejects, F.lit(False))
        rule = F.when(hit, F.lit(r.name)).otherwise(rule)
        reason = F.when(hit, r.reason).otherwise(reason)
    return df.withColumn(RULE_COL, rule).withColumn(REASON_COL, reason)
