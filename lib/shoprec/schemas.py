"""Table schemas as code: the raw data contract and every table shoprec writes.

Column names are constants so that a rename is one edit and a typo is an ImportError, not a silent
null column. Readers always pass these schemas explicitly; nothing is inferred.
``docs/raw-data-contract.md`` describes the raw contract for people.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# ---- raw behaviour events (what a shop exports; one row per event) ----
EVENT_ID = "event_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
USER_ID = "user_id"
SESSION_ID = "session_id"
ITEM_ID = "item_id"
QUERY = "query"
PRICE = "price"
QUANTITY = "quantity"
RATING = "rating"
REVIEW_TEXT = "review_text"
CHANNEL = "channel"
#: Partition column of the raw export folders (``event_date=YYYY-MM-DD``): the day the file was exported.
EVENT_DATE = "event_date"

VIEW, CLICK, ADD_TO_CART, PURCHASE, SEARCH, REVIEW = (
    "view",
    "click",
    "add_to_cart",
    "purchase",
    "search",
    "review",
)
EVENT_TYPES: tuple[str, ...] = (VIEW, CLICK, ADD_TO_CART, PURCHASE, SEARCH, REVIEW)
CHANNELS: tuple[str, ...] = ("web", "app", "email")

RAW_EVENT_SCHEMA = StructType(
    [
        StructField(EVENT_ID, StringType(), True),
        StructField(EVENT_TYPE, StringType(), True),
        StructField(EVENT_TIME, TimestampType(), True),
        StructField(USER_ID, StringType(), True),
        StructField(SESSION_ID, StringType(), True),
        StructField(ITEM_ID, StringType(), True),
        StructField(QUERY, StringType(), True),
        StructField(PRICE, DoubleType(), True),
        StructField(QUANTITY, IntegerType(), True),
        StructField(RATING, IntegerType(), True),
        StructField(REVIEW_TEXT, StringType(), True),
        StructField(CHANNEL, StringType(), True),
    ]
)

# ---- raw catalog (one row per item version) ----
TITLE = "title"
DESCRIPTION = "description"
CATEGORY_PATH = "category_path"
BRAND = "brand"
CURRENCY = "currency"
STOCK = "stock"
DISCOUNT_PCT = "discount_pct"
LAUNCH_DATE = "launch_date"
UPDATED_AT = "updated_at"
#: The catalog's own links between items, as shops keep them for their product pages: items sold
#: with this one (accessories, refills, "bought together") and items that can replace it
#: (alternatives, "similar items"). Optional: a shop without them leaves both empty.
COMPLEMENTS, SUBSTITUTES = "complements", "substitutes"
RELATIONS: tuple[str, ...] = (COMPLEMENTS, SUBSTITUTES)
#: Separator between levels of ``category_path`` ("Home > Kitchen > Knives").
CATEGORY_SEPARATOR = " > "

RAW_CATALOG_SCHEMA = StructType(
    [
        StructField(ITEM_ID, StringType(), True),
        StructField(TITLE, StringType(), True),
        StructField(DESCRIPTION, StringType(), True),
        StructField(CATEGORY_PATH, StringType(), True),
        StructField(BRAND, StringType(), True),
        StructField(PRICE, DoubleType(), True),
        StructField(CURRENCY, StringType(), True),
        StructField(STOCK, IntegerType(), True),
        StructField(DISCOUNT_PCT, DoubleType(), True),
        StructField(LAUNCH_DATE, DateType(), True),
        StructField(UPDATED_AT, TimestampType(), True),
        StructField(COMPLEMENTS, ArrayType(StringType(), True), True),
        StructField(SUBSTITUTES, ArrayType(StringType(), True), True),
    ]
)

# ---- defect labels written beside generated data (so tests can follow every bad row) ----
DEFECT = "defect"
ROW_KEY = "row_key"
DEFECT_LABEL_SCHEMA = StructType(
    [
        StructField(ROW_KEY, StringType(), False),
        StructField(DEFECT, StringType(), False),
    ]
)

# ---- bronze: raw rows as read, plus where and when they came from ----
SOURCE_FILE = "_source_file"
INGEST_BATCH = "_ingest_batch"
INGEST_TIME = "_ingest_time"
CORRUPT_RECORD = "_corrupt_record"
INGEST_METADATA_FIELDS: tuple[StructField, ...] = (
    StructField(CORRUPT_RECORD, StringType(), True),
    StructField(SOURCE_FILE, StringType(), False),
    StructField(INGEST_BATCH, StringType(), False),
    StructField(INGEST_TIME, TimestampType(), False),
)


def with_corrupt_record(schema: StructType) -> StructType:
    """The read schema: the contract plus a column that keeps the text of rows that did not parse."""
    return StructType([*schema.fields, StructField(CORRUPT_RECORD, StringType(), True)])


# ---- the record of raw files already ingested (so each file is loaded once) ----
FILE_PATH = "file_path"
FILE_SIZE = "file_size"
FILE_MODIFIED = "file_modified"
SOURCE = "source"
ROWS = "rows"
INGEST_LOG_SCHEMA = StructType(
    [
        StructField(FILE_PATH, StringType(), False),
        StructField(SOURCE, StringType(), False),
        StructField(FILE_SIZE, LongType(), False),
        StructField(FILE_MODIFIED, TimestampType(), False),
        StructField(INGEST_BATCH, StringType(), False),
        StructField(ROWS, LongType(), False),
        StructField(INGEST_TIME, TimestampType(), False),
    ]
)

BRONZE_EVENT_SCHEMA = StructType(
    [*RAW_EVENT_SCHEMA.fields, *INGEST_METADATA_FIELDS, StructField(EVENT_DATE, DateType(), True)]
)
BRONZE_CATALOG_SCHEMA = StructType([*RAW_CATALOG_SCHEMA.fields, *INGEST_METADATA_FIELDS])


# ---- silver: clean, typed, pseudonymised ----
USER_KEY = "user_key"
SILVER_EVENT_SCHEMA = StructType(
    [
        StructField(EVENT_ID, StringType(), False),
        StructField(EVENT_TYPE, StringType(), False),
        StructField(EVENT_TIME, TimestampType(), False),
        StructField(EVENT_DATE, DateType(), False),
        StructField(USER_KEY, StringType(), False),
        StructField(SESSION_ID, StringType(), True),
        StructField(ITEM_ID, StringType(), True),
        StructField(QUERY, StringType(), True),
        StructField(PRICE, DoubleType(), True),
        StructField(QUANTITY, IntegerType(), True),
        StructField(RATING, IntegerType(), True),
        StructField(REVIEW_TEXT, StringType(), True),
        StructField(CHANNEL, StringType(), True),
        StructField(INGEST_BATCH, StringType(), False),
    ]
)
SILVER_EVENT_CHECKS: dict[str, str] = {
    "known_event_type": f"{EVENT_TYPE} IN ({', '.join(repr(t) for t in EVENT_TYPES)})",
    "positive_price": f"{PRICE} IS NULL OR {PRICE} > 0",
    "rating_1_to_5": f"{RATING} IS NULL OR {RATING} BETWEEN 1 AND 5",
    "item_unless_search": f"{ITEM_ID} IS NOT NULL OR {EVENT_TYPE} = 'search'",
}

SILVER_CATALOG_SCHEMA = StructType(
    [
        StructField(ITEM_ID, StringType(), False),
        StructField(TITLE, StringType(), False),
        StructField(DESCRIPTION, StringType(), True),
        StructField(CATEGORY_PATH, StringType(), False),
        StructField(BRAND, StringType(), True),
        StructField(PRICE, DoubleType(), True),
        StructField(CURRENCY, StringType(), True),
        StructField(STOCK, IntegerType(), True),
        StructField(DISCOUNT_PCT, DoubleType(), True),
        StructField(LAUNCH_DATE, DateType(), True),
        StructField(UPDATED_AT, TimestampType(), False),
        StructField(INGEST_BATCH, StringType(), False),
        StructField(COMPLEMENTS, ArrayType(StringType(), True), True),
        StructField(SUBSTITUTES, ArrayType(StringType(), True), True),
    ]
)
SILVER_CATALOG_CHECKS: dict[str, str] = {
    "positive_price": f"{PRICE} IS NULL OR {PRICE} > 0",
    "stock_not_negative": f"{STOCK} IS NULL OR {STOCK} >= 0",
    "discount_0_to_100": f"{DISCOUNT_PCT} IS NULL OR {DISCOUNT_PCT} BETWEEN 0 AND 100",
}

# ---- quarantine: rejected rows, the rule they broke, why, and the original row ----
RULE = "rule"
REASON = "reason"
RECORD = "record"
QUARANTINED_AT = "quarantined_at"
QUARANTINE_SCHEMA = StructType(
    [
        StructField(RULE, StringType(), False),
        StructField(REASON, StringType(), False),
        StructField(ROW_KEY, StringType(), True),
        StructField(USER_ID, StringType(), True),
        StructField(RECORD, StringType(), False),
        StructField(SOURCE_FILE, StringType(), False),
        StructField(INGEST_BATCH, StringType(), False),
        StructField(QUARANTINED_AT, TimestampType(), False),
    ]
)

# ---- run metrics: the reconciliation of every cleaning run ----
STAGE = "stage"
RUN_ID = "run_id"
RUN_TIME = "run_time"
INPUT_ROWS = "input_rows"
SILVER_ROWS = "silver_rows"
QUARANTINED_ROWS = "quarantined_rows"
DEDUPLICATED_ROWS = "deduplicated_rows"
BY_RULE = "quarantined_by_rule"
RECONCILED = "reconciled"
RUN_METRICS_SCHEMA = StructType(
    [
        StructField(STAGE, StringType(), False),
        StructField(SOURCE, StringType(), False),
        StructField(INGEST_BATCH, StringType(), False),
        StructField(RUN_ID, StringType(), False),
        StructField(RUN_TIME, TimestampType(), False),
        StructField(INPUT_ROWS, LongType(), False),
        StructField(SILVER_ROWS, LongType(), False),
        StructField(QUARANTINED_ROWS, LongType(), False),
        StructField(DEDUPLICATED_ROWS, LongType(), False),
        StructField(BY_RULE, MapType(StringType(), LongType()), False),
        StructField(RECONCILED, BooleanType(), False),
    ]
)


# ---- gold ----
WEIGHT = "weight"
SPLIT = "split"
TRAIN, VALID, TEST, SERVING = "train", "valid", "test", "serving"
SPLITS: tuple[str, ...] = (TRAIN, VALID, TEST, SERVING)
AS_OF = "as_of"

GOLD_INTERACTION_SCHEMA = StructType(
    [
        StructField(EVENT_ID, StringType(), False),
        StructField(USER_KEY, StringType(), False),
        StructField(ITEM_ID, StringType(), False),
        StructField(EVENT_TYPE, StringType(), False),
        StructField(WEIGHT, DoubleType(), False),
        StructField(EVENT_TIME, TimestampType(), False),
        StructField(EVENT_DATE, DateType(), False),
    ]
)

TOP_CATEGORY = "top_category"
PRICE_BAND = "price_band"
SHORT_DESCRIPTION = "short_description"
IN_STOCK = "in_stock"
VIEWS, CLICKS, CARTS, PURCHASES = "views", "clicks", "carts", "purchases"
POPULARITY = "popularity"
CONVERSION_RATE = "conversion_rate"
RATING_MEAN, RATING_COUNT = "rating_mean", "rating_count"
REVIEW_SENTIMENT = "review_sentiment"
ITEM_TEXT = "item_text"
PRICE_BANDS: tuple[str, ...] = ("budget", "mid-range", "premium")

GOLD_ITEM_FEATURES_SCHEMA = StructType(
    [
        StructField(SPLIT, StringType(), False),
        StructField(AS_OF, TimestampType(), False),
        StructField(ITEM_ID, StringType(), False),
        StructField(TITLE, StringType(), False),
        StructField(CATEGORY_PATH, StringType(), False),
        StructField(TOP_CATEGORY, StringType(), False),
        StructField(BRAND, StringType(), True),
        StructField(PRICE, DoubleType(), True),
        StructField(PRICE_BAND, StringType(), False),
        StructField(SHORT_DESCRIPTION, StringType(), True),
        StructField(DISCOUNT_PCT, DoubleType(), True),
        StructField(STOCK, IntegerType(), True),
        StructField(IN_STOCK, BooleanType(), False),
        StructField(LAUNCH_DATE, DateType(), True),
        StructField(VIEWS, LongType(), False),
        StructField(CLICKS, LongType(), False),
        StructField(CARTS, LongType(), False),
        StructField(PURCHASES, LongType(), False),
        StructField(POPULARITY, DoubleType(), False),
        StructField(CONVERSION_RATE, DoubleType(), True),
        StructField(RATING_MEAN, DoubleType(), True),
        StructField(RATING_COUNT, LongType(), False),
        StructField(REVIEW_SENTIMENT, DoubleType(), True),
        StructField(ITEM_TEXT, StringType(), False),
        StructField(COMPLEMENTS, ArrayType(StringType(), True), True),
        StructField(SUBSTITUTES, ArrayType(StringType(), True), True),
    ]
)

WEIGHTED = StructType([StructField("name", StringType(), True), StructField(WEIGHT, DoubleType(), True)])
TOP_CATEGORIES, TOP_BRANDS = "top_categories", "top_brands"
EVENTS_COUNT, ACTIVE_DAYS, RECENCY_DAYS = "events", "active_days", "recency_days"
SEARCH_KEYWORDS = "search_keywords"
PROFILE_TEXT = "profile_text"
GOLD_USER_PROFILE_SCHEMA = StructType(
    [
        StructField(SPLIT, StringType(), False),
        StructField(AS_OF, TimestampType(), False),
        StructField(USER_KEY, StringType(), False),
        StructField(TOP_CATEGORIES, ArrayType(WEIGHTED, True), False),
        StructField(TOP_BRANDS, ArrayType(WEIGHTED, True), False),
        StructField(PRICE_BAND, StringType(), True),
        StructField(EVENTS_COUNT, LongType(), False),
        StructField(ACTIVE_DAYS, LongType(), False),
        StructField(RECENCY_DAYS, DoubleType(), False),
        StructField(REVIEW_SENTIMENT, DoubleType(), True),
        StructField(SEARCH_KEYWORDS, ArrayType(StringType(), True), False),
        StructField(PROFILE_TEXT, StringType(), False),
    ]
)

ITEMS, EVENT_TYPES_COL, TIMES, EVENT_IDS = "items", "event_types", "times", "event_ids"
GOLD_SEQUENCE_SCHEMA = StructType(
    [
        StructField(SPLIT, StringType(), False),
        StructField(USER_KEY, StringType(), False),
        StructField(EVENT_IDS, ArrayType(StringType(), True), False),
        StructField(ITEMS, ArrayType(StringType(), True), False),
        StructField(EVENT_TYPES_COL, ArrayType(StringType(), True), False),
        StructField(TIMES, ArrayType(TimestampType(), True), False),
    ]
)

ACTIVE_DATES, LAST_EVENT_TIME, BATCHES = "active_dates", "last_event_time", "ingest_batches"
SENTIMENT_SUM, SENTIMENT_COUNT = "sentiment_sum", "sentiment_count"
CATEGORY_WEIGHTS, BRAND_WEIGHTS, BAND_WEIGHTS, TERM_COUNTS = (
    "category_weights",
    "brand_weights",
    "price_band_weights",
    "search_term_counts",
)
_WEIGHTS = MapType(StringType(), DoubleType(), True)
#: Serving-time user state: additive aggregates merged day by day (``features.gold.merge_user_state``).
#: ``ingest_batches`` names the silver batches folded in, so re-running a day cannot count it twice.
GOLD_USER_STATE_SCHEMA = StructType(
    [
        StructField(USER_KEY, StringType(), False),
        StructField(EVENTS_COUNT, LongType(), False),
        StructField(ACTIVE_DATES, ArrayType(DateType(), True), False),
        StructField(LAST_EVENT_TIME, TimestampType(), False),
        StructField(SENTIMENT_SUM, DoubleType(), True),
        StructField(SENTIMENT_COUNT, LongType(), False),
        StructField(BATCHES, ArrayType(StringType(), True), False),
        StructField(CATEGORY_WEIGHTS, _WEIGHTS, False),
        StructField(BRAND_WEIGHTS, _WEIGHTS, False),
        StructField(BAND_WEIGHTS, _WEIGHTS, False),
        StructField(TERM_COUNTS, _WEIGHTS, False),
    ]
)

HISTORY_ITEMS, HISTORY_TYPES = "history_items", "history_event_types"
POSITIVE_ITEM, NEGATIVE_ITEMS, TARGET_TIME = "positive_item", "negative_items", "target_time"
GOLD_TRAINING_SCHEMA = StructType(
    [
        StructField(SPLIT, StringType(), False),
        StructField(USER_KEY, StringType(), False),
        StructField(TARGET_TIME, TimestampType(), False),
        StructField(HISTORY_ITEMS, ArrayType(StringType(), True), False),
        StructField(HISTORY_TYPES, ArrayType(StringType(), True), False),
        StructField(POSITIVE_ITEM, StringType(), False),
        StructField(EVENT_TYPE, StringType(), False),
        StructField(NEGATIVE_ITEMS, ArrayType(StringType(), True), False),
    ]
)

# ---- evaluation and serving ----
SCENARIO, RANK, SCORE, SOURCE = "scenario", "rank", "score", "source"
MODEL, MODEL_VERSION, RUN_ID, GENERATED_AT = "model", "model_version", "run_id", "generated_at"
RULES = "rules"
REASON, REASON_KIND, REASON_ITEM, REASON_TEXT = "reason", "kind", "history_item", "text"
#: Why an item is on a list (:mod:`shoprec.serving.reasons`): what put it there or moved it most in
#: the ranker, the user's history item it refers to (similarity, co-occurrence, catalog links),
#: and a sentence a shop can show. Every field is nullable: Delta checks a nested NOT NULL even
#: where the whole struct is null (the lists evaluation writes), so scoring guarantees them instead.
REASON_SCHEMA = StructType(
    [
        StructField(REASON_KIND, StringType(), True),
        StructField(REASON_ITEM, StringType(), True),
        StructField(REASON_TEXT, StringType(), True),
    ]
)
#: The eval_metrics model whose rows are the candidate sources' recall, not a list's metrics.
CANDIDATES_MODEL = "candidates"
#: The recommendations contract: every recommender in shoprec writes this shape (docs/recommendations.md).
RECOMMENDATION_SCHEMA = StructType(
    [
        StructField(USER_KEY, StringType(), False),
        StructField(SCENARIO, StringType(), False),
        StructField(RANK, IntegerType(), False),
        StructField(ITEM_ID, StringType(), False),
        StructField(SCORE, DoubleType(), True),
        StructField(SOURCE, StringType(), False),
        StructField(MODEL, StringType(), False),
        StructField(MODEL_VERSION, StringType(), False),
        StructField(RUN_ID, StringType(), False),
        StructField(GENERATED_AT, TimestampType(), False),
        #: Business rules that moved the item (scoring); null for evaluation lists.
        StructField(RULES, ArrayType(StringType(), True), True),
        #: Why the item is there (scoring); null for evaluation and baseline lists.
        StructField(REASON, REASON_SCHEMA, True),
    ]
)
RECOMMENDATION_CHECKS: dict[str, str] = {"rank_from_one": f"{RANK} >= 1"}

RANKING, SLICE, METRIC, K, VALUE, USERS = "ranking", "slice", "metric", "k", "value", "users"
EVALUATED_AT = "evaluated_at"
#: One row per (run, model, ranking protocol, slice, metric, cut-off).
EVAL_METRICS_SCHEMA = StructType(
    [
        StructField(RUN_ID, StringType(), False),
        StructField(MODEL, StringType(), False),
        StructField(MODEL_VERSION, StringType(), False),
        StructField(SPLIT, StringType(), False),
        StructField(RANKING, StringType(), False),
        StructField(SLICE, StringType(), False),
        StructField(METRIC, StringType(), False),
        StructField(K, IntegerType(), False),
        StructField(VALUE, DoubleType(), True),
        StructField(USERS, LongType(), False),
        StructField(EVALUATED_AT, TimestampType(), False),
    ]
)
