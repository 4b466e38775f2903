"""Typed, frozen configuration loaded from ``conf/<env>.yaml`` with ``--set key=value`` overrides.

Why pydantic dataclasses: they are ordinary frozen dataclasses (what the rest of the code sees), but
they validate types and reject unknown keys on construction, and their errors carry the key's full
path, which we turn into one line naming the key and the file it came from.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, field
from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid", strict=False, validate_default=True)
ENVIRONMENTS = ("local", "cluster", "databricks")
#: Where ``conf/`` lives: beside ``lib/`` in a checkout; overridable for installed wheels.
CONF_DIR_ENV = "SHOPREC_CONF_DIR"
#: Cache for what is slow to fetch or build (environments, Horovod's wheel, Delta's jars).
CACHE_ENV, DEFAULT_CACHE = "SHOPREC_CACHE", "~/.cache/shoprec"


class ConfigError(ShoprecError, ValueError):
    """A configuration problem, with a message that names the key and where it came from."""


@dataclass(frozen=True, config=_STRICT)
class SparkConfig:
    """How jobs get a SparkSession; ignored where a session already exists (Databricks, clusters)."""

    #: ``None`` leaves the master to spark-submit or the platform.
    master: str | None = "local[2]"
    app_name: str = "shoprec"
    shuffle_partitions: int = Field(default=4, ge=1)
    driver_memory: str = "4g"
    #: Maven coordinates of Delta Lake; empty means "the version of the installed delta-spark".
    delta_package: str = ""
    #: Ivy cache for Delta's jars, outside the checkout so every clone reuses them.
    jars_cache: str = field(
        default_factory=lambda: os.path.join(os.environ.get(CACHE_ENV, DEFAULT_CACHE), "ivy")
    )
    #: Resolve Delta's jars through Ivy; false on clusters that already have them.
    resolve_delta_jars: bool = True
    #: More Maven packages resolved and cached like Delta's (``shoprec stream`` adds Spark's Kafka
    #: source when it reads Kafka).
    packages: tuple[str, ...] = ()
    ui_enabled: bool = False
    #: Spark's own log level on the console of a session shoprec builds (``-v``: ``WARN``). Spark's
    #: warnings at this size are about plans, not about anything a user can act on.
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "ERROR"
    #: Spark's console progress bar: ``auto`` draws it only on a terminal (not in a log file,
    #: Airflow's task log or CI), where a long stage would otherwise look stuck.
    progress_bar: Literal["auto", "on", "off"] = "auto"
    #: Extra ``spark.*`` settings, passed through as they are.
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class PathsConfig:
    """Roots for files; ``${root}`` and ``${other_key}`` are expanded in these and in table locations."""

    root: str = "data"
    raw: str = "${root}/raw"
    lake: str = "${root}/lake"
    checkpoints: str = "${root}/checkpoints"
    models: str = "${root}/models"
    petastorm_cache: str = "${root}/cache/petastorm"
    reports: str = "${root}/reports"
    #: Each command's log file and resolved configuration (the console shows only stage lines).
    logs: str = "${root}/logs"


def _default_tables() -> dict[str, str]:
    return {
        "bronze_events": "${lake}/bronze/events",
        "bronze_catalog": "${lake}/bronze/catalog",
        "ingest_log": "${lake}/bronze/_ingest_log",
        "silver_events": "${lake}/silver/events",
        "silver_catalog": "${lake}/silver/catalog",
        "quarantine_events": "${lake}/quarantine/events",
        "quarantine_catalog": "${lake}/quarantine/catalog",
        "run_metrics": "${lake}/ops/run_metrics",
        "gold_interactions": "${lake}/gold/interactions",
        "gold_item_features": "${lake}/gold/item_features",
        "gold_user_profiles": "${lake}/gold/user_profiles",
        "gold_sequences": "${lake}/gold/sequences",
        "gold_training_examples": "${lake}/gold/training_examples",
        "gold_user_state": "${lake}/gold/user_state",
        "recommendations": "${lake}/serve/recommendations",
        "eval_metrics": "${lake}/ops/eval_metrics",
        "training_tokens": "${lake}/gold/training_tokens",
        "ranker_examples": "${lake}/gold/ranker_examples",
        "item_embeddings": "${lake}/serve/item_embeddings",
        "score_candidates": "${lake}/serve/candidates",
        "stream_metrics": "${lake}/ops/stream_metrics",
    }


EventType = Literal["view", "click", "add_to_cart", "purchase", "search", "review"]


def _default_weights() -> dict[EventType, float]:
    return {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "review": 6.0}


@dataclass(frozen=True, config=_STRICT)
class SplitConfig:
    """How examples are split in time. ``time``: one global cut (train < valid_start <= valid <
    test_start <= test); ``leave_last_out``: each user's last positive is test, the one before valid."""

    mode: Literal["time", "leave_last_out"] = "time"
    #: Explicit cuts for ``time`` mode; when unset, the last ``test_days`` and the ``valid_days``
    #: before them are held out.
    valid_start: date | None = None
    test_start: date | None = None
    valid_days: int = Field(default=3, ge=1)
    test_days: int = Field(default=3, ge=1)


@dataclass(frozen=True, config=_STRICT)
class FeaturesConfig:
    """Gold tables: interaction weights, histories, negatives, splits."""

    event_weights: dict[EventType, float] = field(default_factory=_default_weights)
    #: Event types that make a (history → next item) training example.
    positive_events: tuple[EventType, ...] = ("click", "add_to_cart", "purchase", "review")
    history_length: int = Field(default=20, ge=1)
    train_negatives: int = Field(default=4, ge=0)
    eval_negatives: int = Field(default=99, ge=0)
    top_k: int = Field(default=5, ge=1, le=255)  # scoring addresses an entry in 8 bits (ranker.MAX_TOP)
    seed: int = 13
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True, config=_STRICT)
class CleaningConfig:
    """Thresholds of the silver cleaning rules (each rule's name is in ``shoprec.etl.rules``)."""

    #: Events before this date are rejected (``timestamp_before_floor``).
    time_floor: date = date(2000, 1, 1)
    #: Events more than this many hours after the run's clock are rejected (``future_timestamp``).
    max_future_hours: float = Field(default=24.0, ge=0)
    #: Prices at or above this are absurd (``bad_price``); zero and negative always are.
    max_price: float = Field(default=1_000_000.0, gt=0)
    #: Reject catalog rows without a price, and add-to-cart and purchase events without one
    #: (``bad_price``; off for shops whose export has none).
    require_price: bool = True
    #: Text longer than this is rejected (``oversized_text``).
    max_text_chars: int = Field(default=20_000, ge=1)
    #: Ids (event, user, session, item) longer than this are rejected (``oversized_id``): no shop
    #: issues them, and a reason quotes at most :data:`shoprec.etl.rules.SHOWN_CHARS` of one.
    max_id_chars: int = Field(default=256, ge=1)
    #: A user with more events than this in one UTC day is a bot (``bot_user``).
    bot_events_per_day: int = Field(default=300, ge=1)


@dataclass(frozen=True, config=_STRICT)
class PrivacyConfig:
    """Pseudonymisation: where the key comes from (never the key itself) and bronze retention."""

    #: Environment variable holding the HMAC key for user ids.
    key_env: str = "SHOPREC_PSEUDONYM_KEY"
    #: Databricks secret ``scope/key`` to read the key from when the variable is not set.
    databricks_secret: str | None = None
    #: Local runs only: without a key, create one under the cache folder (never for real data).
    allow_generated_key: bool = False
    #: Days of raw (bronze) rows to keep; older export days are deleted by ``shoprec forget --expired``.
    bronze_retention_days: int = Field(default=90, ge=1)


@dataclass(frozen=True, config=_STRICT)
class GeneratorConfig:
    """The synthetic shop: sizes, time span, defects and file format of the raw exports."""

    #: Generate the synthetic shop in ``shoprec run``; off when ``sources`` point at real exports.
    enabled: bool = True
    seed: int = 42
    users: int = Field(default=2000, ge=1)
    items: int = Field(default=600, ge=10)
    start_date: date = date(2026, 1, 1)
    days: int = Field(default=28, ge=1)
    #: Multiplies users and items; a cluster sets this to reach terabytes.
    scale: float = Field(default=1.0, gt=0)
    #: Mean sessions per user over the whole span (each user's rate is drawn around it).
    sessions_per_user: float = Field(default=6.0, gt=0)
    #: Exponent of the Zipf-like item popularity.
    zipf_exponent: float = Field(default=1.0, ge=0)
    #: Users generated per independent block; memory per task is bounded by this.
    users_per_block: int = Field(default=1000, ge=1)
    items_per_block: int = Field(default=20000, ge=1)
    #: Fraction of catalog items launched during the span rather than before it (cold start).
    new_item_fraction: float = Field(default=0.15, ge=0, le=1)
    bad_row_rate: float = Field(default=0.0, ge=0, le=0.5)
    format: Literal["json", "csv", "parquet"] = "json"


@dataclass(frozen=True, config=_STRICT)
class JoinConfig:
    """A second file joined to a source on a shared column (a lookup: ids, categories, text)."""

    path: str
    #: The column both sides share (not ``on``: YAML reads that word as true).
    key: str
    format: Literal["json", "csv", "parquet"] = "csv"
    options: dict[str, str] = field(default_factory=dict)
    #: The file's columns as a Spark DDL string ("asin STRING, item_id STRING").
    schema_ddl: str | None = None
    how: Literal["left", "inner"] = "left"


@dataclass(frozen=True, config=_STRICT)
class SourceConfig:
    """Bring your own data: where a shop's export is and how its columns map onto the raw contract.

    ``columns`` maps each contract field to a Spark SQL expression over the shop's own columns
    (``"timestamp_seconds(ts)"``, ``"concat_ws('-', user, item, ts)"``, ``"'USD'"``); fields left out
    are null. ``event_codes`` renames the shop's event codes; ``emit`` turns each row into one event
    per listed type (a review that is also a purchase), suffixing the event id with the type.
    """

    path: str
    format: Literal["json", "csv", "parquet"] = "json"
    options: dict[str, str] = field(default_factory=dict)
    #: The shop's columns as a Spark DDL string; unset means the files already follow the contract.
    schema_ddl: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    event_codes: dict[str, EventType] = field(default_factory=dict)
    emit: tuple[EventType, ...] = ()
    joins: tuple[JoinConfig, ...] = ()


@dataclass(frozen=True, config=_STRICT)
class SourcesConfig:
    """The shop's exports, each a list of feeds (files with one layout each); empty means the
    generator's output under ``paths.raw``."""

    events: tuple[SourceConfig, ...] = ()
    catalog: tuple[SourceConfig, ...] = ()


ModelName = Literal[
    "popularity", "category_popularity", "recent_popularity", "als", "encoder", "sasrec", "sequence"
]


@dataclass(frozen=True, config=_STRICT)
class SampledSourceConfig:
    """Per-event negatives a benchmark publishes (each test event's positive and its N negatives),
    read through the same column mapping as the sources: ``columns`` gives ``user_id``,
    ``item_id`` and ``negatives`` (an ``array<string>`` expression)."""

    split: Literal["valid", "test"]
    path: str
    format: Literal["json", "csv", "parquet"] = "csv"
    options: dict[str, str] = field(default_factory=dict)
    schema_ddl: str | None = None
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class AlsConfig:
    """Spark ML ALS on implicit feedback (weights from ``features.event_weights``)."""

    rank: int = Field(default=32, ge=1)
    reg_param: float = Field(default=0.05, ge=0)
    alpha: float = Field(default=10.0, ge=0)
    max_iter: int = Field(default=10, ge=1)
    seed: int = 7


@dataclass(frozen=True, config=_STRICT)
class EncoderConfig:
    """A pretrained sentence encoder used zero-shot: user history text against item text."""

    #: A saved transformers model directory; unset means the packaged all-MiniLM-L6-v2.
    model_path: str | None = None
    #: Tokens per text for a plain pretrained encoder; a fine-tuned model's towers read the widths
    #: they were trained at (``training.user_max_length``/``item_max_length``).
    max_length: int = Field(default=128, ge=8)
    batch_size: int = Field(default=64, ge=1)
    #: How many of the user's most recent items the user text names.
    history_items: int = Field(default=10, ge=1)
    #: Torch threads per Spark task (tasks already run in parallel: more would oversubscribe).
    threads: int = Field(default=1, ge=1)


@dataclass(frozen=True, config=_STRICT)
class SasrecConfig:
    """The SASRec baseline (Kang & McAuley 2018), trained on what the evaluated split could see."""

    dim: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=2, ge=1)
    max_len: int = Field(default=50, ge=2)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=128, ge=1)
    #: Training stops when the users' last visible items are not predicted better (NDCG@10) for
    #: ``patience`` epochs in a row, or after ``max_epochs``.
    max_epochs: int = Field(default=100, ge=1)
    #: 8, not 3: on sparse data the validation NDCG dips while the first epochs learn popularity,
    #: and a patience of 3 stopped there (Office 2014: 4 epochs, NDCG@10 .0037; 8: .0121).
    patience: int = Field(default=8, ge=1)
    seed: int = 11


@dataclass(frozen=True, config=_STRICT)
class SequenceConfig(SasrecConfig):
    """shoprec's sequence retriever: SASRec's network over the items' text vectors (UniSRec style)."""

    #: Keep a learned ID embedding beside each item's projected text (False: text only, so an item
    #: nobody touched in training is placed by its words alone).
    ids: bool = True
    #: Embed the time since the previous step (log-scale buckets) beside the position.
    time_gaps: bool = True


@dataclass(frozen=True, config=_STRICT)
class TrainedSequenceConfig(SequenceConfig):
    """The sequence retriever ``shoprec train`` fits and saves with the model: a candidate source
    (``scoring.sequence_k``) and a ranking signal for every pair."""

    enabled: bool = True


@dataclass(frozen=True, config=_STRICT)
class EvaluationConfig:
    """Offline evaluation: which split, which cut-offs, which models, which slices."""

    split: Literal["valid", "test"] = "test"
    ks: tuple[int, ...] = (10, 20, 50)
    #: The scoring scenario whose lists are evaluated before and after each business rule (when a
    #: trained ranker is evaluated); unset: the first of ``scoring.scenarios``.
    scored_scenario: str | None = None
    #: When the learning-to-rank model serves, also measure the lists the torch head would serve
    #: (same candidates, same rules): the comparison the ranker's choice rests on, on the test split.
    torch_head: bool = True
    models: tuple[ModelName, ...] = (
        "popularity",
        "category_popularity",
        "recent_popularity",
        "als",
        "encoder",
        "sasrec",
        "sequence",
    )
    #: Leave out items the user already had a positive event with (and such targets).
    exclude_seen: bool = True
    #: ``recent_popularity`` counts the last this many days before the split's cut.
    recent_days: int = Field(default=14, ge=1)
    #: Users with at least this many events are "heavy"; unset means the median.
    heavy_user_events: int | None = Field(default=None, ge=1)
    #: Sampled ranking: published negatives per split; without them, the gold examples' drawn ones.
    sampled: tuple[SampledSourceConfig, ...] = ()
    #: Retrieval: catalog items per block of the score matrix (bounds memory per task: a block is
    #: ``user_block x item_block`` floats, 32 MiB by default). Few, wide blocks are faster: each
    #: block costs a top-K pass and a merge (bench/retrieval.py).
    item_block: int = Field(default=32768, ge=16)
    #: Retrieval: users scored together in one matrix multiply; a few hundred keep the block's
    #: scores in cache for the top-K pass that follows.
    user_block: int = Field(default=256, ge=1)
    #: Retrieval: the largest item matrix (float32 MiB) broadcast whole; a larger catalog is cut
    #: into shards of this size, scored one after another against every user block and merged
    #: per user (the same lists; the driver holds one shard at a time).
    broadcast_mib: float = Field(default=1024.0, gt=0)
    als: AlsConfig = field(default_factory=AlsConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sasrec: SasrecConfig = field(default_factory=SasrecConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)


@dataclass(frozen=True, config=_STRICT)
class LoraConfig:
    """Low-rank adapters (peft) on the encoder's attention instead of updating every weight."""

    enabled: bool = False
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)


@dataclass(frozen=True, config=_STRICT)
class ObjectiveWeights:
    """How the ranker's heads combine into one score: p(click)^click × p(purchase)^purchase ×
    (1 + price)^value, i.e. a weighted sum of logs. ``purchase: 1, value: 1`` ranks by expected
    revenue; ``click: 1`` alone by engagement."""

    click: float = Field(default=1.0, ge=0)
    purchase: float = Field(default=1.0, ge=0)
    value: float = Field(default=0.0, ge=0)


@dataclass(frozen=True, config=_STRICT)
class LightGbmConfig:
    """The learning-to-rank model over every candidate source (LightGBM). Defaults were chosen on
    the validation lists of the demo shop and of Office (see docs/training.md): a few hundred lists
    overfit fast, so the trees are small and regularised."""

    #: Listwise objectives to try; the one whose model ranks the held-out validation lists best
    #: (NDCG@10) is kept. ``rank_xendcg`` (a softmax cross-entropy over the list) and
    #: ``lambdarank`` (LambdaMART on NDCG). Default ``lambdarank`` alone: as fold ensembles it led
    #: on the held-out validation lists of both the demo (.2965 against .2590) and Office (.1881
    #: against .1799), and fitting ``rank_xendcg`` too took most of Office's learning-to-rank time
    #: (its members ran 42 to 289 rounds against 13 to 169).
    objectives: tuple[Literal["rank_xendcg", "lambdarank"], ...] = ("lambdarank",)
    rounds: int = Field(default=600, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    #: Small trees with many rows per leaf: on the demo's validation lists (lambdarank, stock rule
    #: on) 7 leaves and 100 rows per leaf ranked at NDCG@10 .2924 out of fold (343 users) and .2973
    #: on the held-out users (108), against .2796 and .2809 for 15 leaves and 50 rows.
    leaves: int = Field(default=7, ge=2)
    min_child_samples: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    l2: float = Field(default=10.0, ge=0)
    #: Stop a member when its own fold's NDCG@10 has not improved for this many rounds.
    early_stopping: int = Field(default=80, ge=1)
    #: The model is this many members, each fitted on the other folds of the fitted users and
    #: early-stopped on its own, their standardised scores averaged: every list serves for
    #: fitting and for stopping, and the average is steadier than one model (docs/training.md).
    folds: int = Field(default=5, ge=2)
    #: Users in the fitting lists are capped at this many (by hash; None: all).
    max_users: int | None = Field(default=None, ge=1)
    #: Items no source proposed, added to each fitted list: about this many catalog items drawn
    #: by hash (label 0) and the user's held-out positives that no source reached (label 1).
    #: Lists of candidates alone never show the trees a pair without a source's score, and such
    #: pairs are what a given candidate set (sampled evaluation, a shop's own candidates) holds
    #: mostly. Early stopping reads only candidates, what serving orders, and the held-out users'
    #: lists hold none of these pairs. 0: candidates only.
    outside_items: int = Field(default=20, ge=0)
    #: A second model for ranking a set someone else chose (sampled evaluation's target and
    #: negatives, a shop's own shortlist), fitted on lists of each user's validation positives
    #: and this many drawn items they never touched, every pair with the sources that proposed it
    #: or none. It is kept only when it orders the held-out users' such lists better than the
    #: model that serves; the served lists of candidates always come from that model. 0: none.
    given_negatives: int = Field(default=100, ge=0)
    #: Tree shapes (leaves, rows per leaf) tried for the given-set model; the one that orders the
    #: held-out users' given-set lists best (NDCG@10) is kept. Such lists are many rows per user
    #: (the positives and ``given_negatives`` draws) and the right size of tree depends on the
    #: shop: on Office's validation lists (3,889 fitted, 1,016 held out) 7/100 ranked at .4257,
    #: 15/50 at .4291 and 15/200 at .4319, where the served lists' model preferred 7/100 (.1926
    #: against .1916 and .1878). Each extra shape is one more fold ensemble (about a minute on
    #: Office, 2 cores).
    given_shapes: tuple[tuple[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=1)]], ...] = Field(
        default=((7, 100), (15, 200)), min_length=1
    )


@dataclass(frozen=True, config=_STRICT)
class RankerConfig:
    """The ranking head: (user vector, item vector, features) → p(click), p(purchase).

    Trained after the retriever on its embeddings (frozen), listwise per head (each example's
    positive against its random and hard negatives), by the same launcher and processes.
    Optionally distilled into a smaller student for scoring."""

    enabled: bool = True
    #: The gold examples the head learns from. ``valid`` (default): the validation split's, whose
    #: features (profiles, popularity) were computed *before* their events, as at scoring time,
    #: and whose user vectors the retriever never trained on; ``holdout`` of their users validate
    #: the head. ``train``: the retriever's own examples, validated on the validation split; their
    #: features already count the event being predicted (a user's brand affinity includes the
    #: positive's brand), so the head learns to trust them more than serving can (on Office the
    #: positive's brand affinity is 0.22 in train examples, 0.11 in validation ones, 0.09 for a
    #: random item) and orders worse than the retriever alone.
    fit_split: Literal["valid", "train"] = "valid"
    #: With ``fit_split: valid``, the share of its users (by hash) kept out to validate the head.
    holdout: float = Field(default=0.2, gt=0, lt=1)
    #: Negatives per positive, taken from the example's sampled negatives (random catalog items).
    negatives: int = Field(default=4, ge=1)
    #: More negatives per positive drawn from the retriever's own top ``hard_pool`` items for the
    #: example's user (the positive excluded): the candidates the head must order at scoring time.
    #: Trained on random items alone, the head learns to tell plausible from implausible, which
    #: the retriever already does, not to order the plausible ones.
    hard_negatives: int = Field(default=16, ge=0)
    hard_pool: int = Field(default=100, ge=1)
    #: Weight of the pointwise term (positive against random negatives) beside the listwise one:
    #: it keeps the heads' outputs probabilities (see ``shoprec.modeling.ranker.listwise_loss``).
    calibration: float = Field(default=0.1, ge=0)
    #: Softmax only over the positive and the hard negatives, of lists that have some (see
    #: ``shoprec.modeling.ranker.listwise_loss``); random negatives then only calibrate.
    hard_lists: bool = False
    #: The head's starting weight on the retriever's cosine (it learns a correction on top):
    #: ``retriever`` = the retriever's 1 / temperature, the scale it was trained at; or a number.
    skip: float | Literal["retriever"] = 5.0
    #: Whether the MLP also reads the element-wise product of the two vectors (one input per
    #: dimension) beside their dot product and the features.
    product: bool = True
    #: Shares of the MLP's correction to the retriever's score to try after training; the one
    #: ranking validation positives best among their hard negatives is kept (0 = the retriever's
    #: order; ``[1.0]`` keeps the whole correction without choosing).
    corrections: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 1.0)
    hidden: tuple[int, ...] = (128, 32)
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=256, ge=2)
    learning_rate: float = Field(default=1e-3, gt=0)
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)
    #: Also train a student with these hidden sizes on the teacher's probabilities (empty: none).
    student_hidden: tuple[int, ...] = ()
    #: Which model orders the served candidates: ``lightgbm`` (LambdaRank over every source's
    #: signals), ``torch`` (the head above) or ``auto``: both are measured on the same held-out
    #: candidate lists at the validation cut and the better NDCG@10 is kept.
    kind: Literal["auto", "lightgbm", "torch"] = "auto"
    lightgbm: LightGbmConfig = field(default_factory=LightGbmConfig)


@dataclass(frozen=True, config=_STRICT)
class TrainingConfig:
    """Fine-tuning the two-tower retriever (and ranking head) on the gold training examples."""

    #: Whether ``shoprec run`` trains (``shoprec train`` always does).
    enabled: bool = False
    #: The pretrained encoder to start from; unset means the packaged all-MiniLM-L6-v2.
    model_path: str | None = None
    #: ``horovod``: local processes over gloo (what ``horovodrun -np N`` starts); ``spark``: Horovod
    #: inside Spark barrier tasks on the cluster's executors (``horovod.spark.run``); ``single``:
    #: this process.
    launcher: Literal["horovod", "spark", "single"] = "horovod"
    processes: int = Field(default=2, ge=1)
    #: Torch threads per training process; unset: the machine's cores shared among the processes.
    threads: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=1, ge=1)
    #: Stop after this many optimizer steps in total (unset: all epochs).
    max_steps: int | None = Field(default=None, ge=1)
    #: Use at most this many training examples (the demo trains on a sample; unset: all).
    max_examples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=2)
    #: Learning rate for one process; multiplied by the number of processes.
    learning_rate: float = Field(default=3e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=10, ge=0)
    temperature: float = Field(default=0.05, gt=0)
    #: Subtract log(item frequency) from in-batch logits (popular items are over-sampled negatives).
    logq_correction: bool = True
    user_max_length: int = Field(default=96, ge=8)
    item_max_length: int = Field(default=64, ge=8)
    #: The user text names this many recent items, newest first.
    history_items: int = Field(default=8, ge=1)
    #: One hard negative per example from the category-popularity baseline: a popular item of the
    #: positive's category (one of its ``hard_negative_pool`` most popular), added to the softmax.
    hard_negatives: bool = False
    hard_negative_pool: int = Field(default=20, ge=2)
    #: Freeze the embeddings and the lowest N transformer layers.
    freeze_layers: int = Field(default=0, ge=0)
    lora: LoraConfig = field(default_factory=LoraConfig)
    checkpoint_every_steps: int = Field(default=50, ge=1)
    log_every_steps: int = Field(default=5, ge=1)
    seed: int = 17
    #: bf16/fp16 autocast on CUDA (ignored on CPU).
    mixed_precision: bool = True
    #: MLflow tracking URI; unset means a local file store under ``paths.root``/mlruns.
    tracking_uri: str | None = None
    experiment: str = "shoprec"
    #: Every trained model becomes a version of this registered model (the first one, champion).
    registered_model: str = "shoprec-ranker"
    #: ``shoprec promote`` (and ``shoprec run`` after training) moves @champion to a version only
    #: if it scores higher than the champion on this: ``valid_served_<ndcg|recall|mrr>_at_<k>``,
    #: the lists each version would serve (its ranker and the scored scenario's rules), full
    #: ranking on the validation split's users that no ranker is fitted on
    #: (``training.ranker.holdout``). Never the test split: choosing on it would leak.
    promote_metric: str = Field(
        default="valid_served_ndcg_at_10", pattern=r"^valid_served_(ndcg|recall|mrr)_at_\d+$"
    )
    #: When ``train`` trains. ``on_change``: whenever what it reads (the content of the gold train
    #: and validation snapshots, the interactions the validation cut sees) or its settings changed
    #: since a finished training, else that training's model is re-used (no new version);
    #: ``daily`` / ``weekly``: the same, and at most once per day / seven days by the processing
    #: date. ``shoprec train --force`` trains regardless.
    retrain: Literal["on_change", "daily", "weekly"] = "on_change"
    ranker: RankerConfig = field(default_factory=RankerConfig)
    sequence: TrainedSequenceConfig = field(default_factory=TrainedSequenceConfig)


@dataclass(frozen=True, config=_STRICT)
class ScenarioConfig:
    """One surface's business rules (``app``, ``web``...), applied after the ranker, in this order."""

    name: str
    #: Items in the final list.
    k: int = Field(default=20, ge=1)
    drop_out_of_stock: bool = True
    #: Drop items the user already bought, except in these top-level categories.
    exclude_bought: bool = True
    repeat_categories: tuple[str, ...] = ()
    #: Subtract ``price_affinity × band gap`` (0, ½ or 1 band apart) from the log score. Off by
    #: default, as is the promotion boost: both rankers read the band gap and the discount as
    #: features and weigh them from behaviour, so a fixed nudge on top counts them twice. Chosen on
    #: the demo's validation lists (learning-to-rank scores out of fold, 343 users, stock rule on):
    #: NDCG@10 .2796 with neither nudge, .2714 at price 0.5, .2629 at 1.0, .2674 at the former
    #: defaults (0.5 and 1.0). A shop that wants to push its bands or promotions sets them.
    price_affinity: float = Field(default=0.0, ge=0)
    #: Add ``promotion_boost × discount`` (a fraction) to the log score (off by default: see above).
    promotion_boost: float = Field(default=0.0, ge=0)
    #: ``category_cap``: at most ``category_cap`` items per top-level category; ``mmr``: maximal
    #: marginal relevance on item embeddings with ``mmr_lambda``; ``none``.
    diversity: Literal["none", "category_cap", "mmr"] = "category_cap"
    category_cap: int = Field(default=4, ge=1)
    mmr_lambda: float = Field(default=0.7, ge=0, le=1)
    #: How the ranker's heads combine into the final score.
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)


def _default_scenarios() -> tuple[ScenarioConfig, ...]:
    # The first scenario is the one evaluated as "served": it keeps only the rules a shop expects
    # everywhere (stock, already bought; the price and promotion nudges are off unless a shop sets
    # them, see ScenarioConfig). A per-category cap is a choice of
    # the surface, not a default: most users shop in one or two top categories, so a cap of 3 in 10
    # filled the rest of their lists with categories they never touch (demo: R@10 .27 -> .14).
    return (
        ScenarioConfig(name="app", k=10, diversity="none"),
        ScenarioConfig(
            name="web", k=20, diversity="mmr", weights=ObjectiveWeights(click=1.0, purchase=1.0, value=0.5)
        ),
    )


@dataclass(frozen=True, config=_STRICT)
class ScoringConfig:
    """Batch scoring: candidates for every serving user, the ranker, business rules, MERGE."""

    #: A trained model directory (retriever + ``ranker/``); it overrides ``model_uri``.
    model_path: str | None = None
    #: The registered model to score with; unset: ``models:/<training.registered_model>@champion``.
    model_uri: str | None = None
    #: The ``model`` column of the recommendations it writes.
    model_name: str = "shoprec"
    #: Score with the distilled student instead of the ranker.
    use_student: bool = False
    #: Candidates per source.
    retrieval_k: int = Field(default=100, ge=1)
    als_k: int = Field(default=50, ge=0)
    popular_k: int = Field(default=20, ge=0)
    new_item_k: int = Field(default=10, ge=0)
    #: Items launched within this many days of the data's end are "new" (reached by text only).
    new_item_days: int = Field(default=14, ge=1)
    #: Items that co-occur most with the user's recent items (0: no such source; the ranker still
    #: reads the co-occurrence scores of every candidate).
    cooc_k: int = Field(default=50, ge=0)
    #: Two items co-occur when they are at most this many positions apart in a user's history.
    cooc_window: int = Field(default=5, ge=1)
    #: The user's most recent items the co-occurrence is measured against, and the weight of each
    #: older one relative to the next newer (0.7: the second-newest counts 0.7, the third 0.49).
    cooc_recent: int = Field(default=10, ge=1)
    cooc_decay: float = Field(default=0.7, gt=0, le=1)
    #: Neighbours kept per item.
    cooc_neighbours: int = Field(default=100, ge=1)
    #: The user's own most recent items, as candidates (0: none).
    recent_k: int = Field(default=10, ge=0)
    #: Items of the user's own categories (the full category path, each weighted by the user's
    #: share of it) ranked by their share of their category's interactions (0: none).
    category_k: int = Field(default=50, ge=0)
    #: Items the catalog links to the user's recent items (its complements and substitutes,
    #: weighted like co-occurrence by how recent the linking item is); nothing when the catalog
    #: holds no links (0: no such source; the ranker still reads every candidate's links).
    related_k: int = Field(default=50, ge=0)
    #: The trained sequence retriever's top items (0: no such source; the ranker still reads its
    #: score for every candidate). Nothing when the model was trained without one.
    sequence_k: int = Field(default=50, ge=0)
    #: Rows per ranker forward pass inside the scoring UDF.
    batch_size: int = Field(default=4096, ge=1)
    #: Torch threads per Spark task (one task per core: 1 avoids oversubscription).
    threads: int = Field(default=1, ge=1)
    scenarios: tuple[ScenarioConfig, ...] = field(default_factory=_default_scenarios)


@dataclass(frozen=True, config=_STRICT)
class KafkaConfig:
    """The Kafka topic the stream reads (``stream.source: kafka``): one JSON value per event, in
    the raw events contract."""

    bootstrap_servers: str = "localhost:9092"
    topic: str = "shoprec-events"
    #: Where a query without a checkpoint starts (a restarted query resumes from its checkpoint).
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    #: Maven coordinates of Spark's Kafka source; unset: the build matching the installed pyspark.
    package: str | None = None
    #: Extra ``kafka.*`` and source options (security settings, ``failOnDataLoss``...), as they are.
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class StreamConfig:
    """``shoprec stream``: new events folded in and their users re-scored per micro-batch."""

    source: Literal["files", "kafka"] = "files"
    #: How new files are found: ``spark`` (Spark's file source, which lists the folders each
    #: trigger) or ``cloudFiles`` (Databricks Auto Loader).
    file_reader: Literal["spark", "cloudFiles"] = "spark"
    #: Where the query keeps its progress; a restart resumes from it (one folder per query).
    checkpoint: str = "${checkpoints}/stream"
    #: ``processingTime``: a micro-batch every ``interval`` while it runs; ``availableNow``: what
    #: has arrived, in micro-batches, then stop (a catch-up run, a scheduled job).
    trigger: Literal["processingTime", "availableNow"] = "processingTime"
    interval: str = "5 seconds"
    #: Caps per micro-batch (unset: everything that arrived).
    max_files_per_trigger: int | None = Field(default=None, ge=1)
    max_offsets_per_trigger: int | None = Field(default=None, ge=1)
    #: How far each micro-batch goes: ``silver`` (clean and quarantine), ``gold`` (also the users'
    #: sequences and profiles), ``recommendations`` (also re-score the batch's users).
    update: Literal["silver", "gold", "recommendations"] = "recommendations"
    #: The signals every user shares (ALS factors, co-occurrence, popularity) are kept between
    #: micro-batches and recomputed after this many minutes; a user's own signals never wait.
    refresh_minutes: float = Field(default=60.0, gt=0)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)


@dataclass(frozen=True, config=_STRICT)
class ShoprecConfig:
    """Everything a job needs; built once per run and passed down."""

    env: str = "local"
    #: The day being processed (a scheduler's data interval; ``--date``): ingest takes export files
    #: of days up to it (``event_date=YYYY-MM-DD`` folders; files outside such folders always).
    #: Unset: everything that has arrived.
    processing_date: date | None = None
    spark: SparkConfig = field(default_factory=SparkConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    tables: dict[str, str] = field(default_factory=_default_tables)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)

    def path(self, name: str) -> str:
        """A resolved entry of ``paths`` (``raw``, ``lake``...)."""
        return _expand(getattr(self.paths, name), self.paths, f"paths.{name}")

    def table(self, name: str) -> str:
        """A table's location: a filesystem path or URI, or a metastore name (``catalog.schema.t``)."""
        if name not in self.tables:
            known = ", ".join(sorted(self.tables))
            raise ConfigError(f"tables.{name}: no such table in the configuration (known: {known})")
        return _expand(self.tables[name], self.paths, f"tables.{name}")

    def resolve(self, value: str, key: str) -> str:
        """Expand ``${paths entry}`` references and make a local relative path absolute."""
        return _expand(value, self.paths, key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_VAR = re.compile(r"\$\{([a-z_]+)\}")


def _expand(value: str, paths: PathsConfig, key: str, depth: int = 0) -> str:
    """Expand ``${name}`` references to other ``paths`` entries, then ``~``."""
    if depth > 10:
        raise ConfigError(f"{key}: circular ${{...}} reference in {value!r}")

    def sub(match: re.Match[str]) -> str:
        ref = match.group(1)
        if not hasattr(paths, ref):
            raise ConfigError(f"{key}: unknown reference ${{{ref}}} (known: {', '.join(_fields(paths))})")
        return _expand(getattr(paths, ref), paths, f"paths.{ref}", depth + 1)

    out = os.path.expanduser(_VAR.sub(sub, value))
    if depth == 0 and "://" not in out and (out.startswith(".") or "/" in out) and not out.startswith("/"):
        out = os.path.abspath(out)  # relative local paths: Delta and Spark workers need absolute ones
    return out


def _fields(obj: object) -> list[str]:
    return list(getattr(obj, "__dataclass_fields__", {}))


def is_table_path(location: str) -> bool:
    """A location with a slash or a URI scheme is a path; otherwise it is a metastore table name."""
    return "/" in location or "://" in location or location.startswith(".")


def default_conf_dir() -> Path | Traversable:
    """``$SHOPREC_CONF_DIR``, else the checkout's ``conf/``, else the copy shipped inside the wheel
    (read through importlib.resources: under ``spark-submit --py-files`` the wheel is a zip)."""
    if os.environ.get(CONF_DIR_ENV):
        return Path(os.environ[CONF_DIR_ENV])
    checkout = Path(__file__).resolve().parents[2] / "conf"
    return checkout if checkout.is_dir() else resources.files("shoprec") / "_conf"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.epochs=3`` → (["training", "epochs"], 3); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example --set generator.users=500")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date-like value that is no date
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "unexpected_keyword_argument" or err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required value is missing"
        else:
            msg = f"{err['msg']} (got {err.get('input')!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ShoprecConfig:
    """Validate a plain mapping into a :class:`ShoprecConfig`, naming ``source`` in any error."""
    try:
        return ShoprecConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {keys[-1]: value}
    for k in reversed(keys[:-1]):
        out = {k: out}
    return out


def load_config(
    env: str = "local",
    overrides: Iterable[str] = (),
    conf_dir: str | Path | None = None,
) -> ShoprecConfig:
    """Load ``conf/<env>.yaml`` and apply ``key=value`` overrides, validating every key and type.

    Args:
        env: the environment, the name of a YAML file in ``conf_dir``.
        overrides: ``dotted.key=value`` strings, as given to ``--set``.
        conf_dir: where the YAML files are (default: the checkout's ``conf/``).
    """
    directory = Path(conf_dir) if conf_dir else default_conf_dir()
    path = directory / f"{env}.yaml"
    if not path.is_file():
        available = (
            sorted(p.name.removesuffix(".yaml") for p in directory.iterdir() if p.name.endswith(".yaml"))
            if directory.is_dir()
            else []
        )
        raise ConfigError(
            f"environment {env!r}: no file {path} (available: {', '.join(available) or 'none'}); "
            f"pass --env with one of those"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data.setdefault("env", env)
    cfg = from_dict(data, str(path))  # errors in the file name the file
    merged = cfg.to_dict()
    for text in overrides:
        keys, value = parse_override(text)
        merged = _merge(merged, _nest(keys, value))
        from_dict(merged, f"--set {text}")  # errors in an override name the override
    return from_dict(merged, str(path))


def config_text(cfg: ShoprecConfig) -> str:
    """The resolved configuration as YAML (it holds no secrets: only their names)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def log_config(cfg: ShoprecConfig) -> None:
    """Log the resolved configuration once at job start (it holds no secrets: only their names)."""
    log.info("configuration (env=%s):\n%s", cfg.env, config_text(cfg))
