"""Keyed pseudonyms for user ids: HMAC-SHA256, computed inside Spark's JVM.

Why HMAC rather than a plain hash: without the key nobody can rebuild the table of
hash(id) → id by hashing candidate ids. Why in the JVM: Spark has SHA-256 but no HMAC, and
HMAC is two SHA-256 passes over the key padded with fixed bytes, so the padded keys are computed
here once and the rest is built from Spark SQL functions: no Python UDF, no rows through Python.
The key comes from the environment (or a Databricks secret) and is never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from shoprec.config import CACHE_ENV, DEFAULT_CACHE, PrivacyConfig
from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)
_BLOCK = 64  # SHA-256 block size in bytes


class MissingKeyError(ShoprecError):
    """No pseudonymisation key is available."""


def load_key(cfg: PrivacyConfig) -> bytes:
    """The HMAC key: environment variable, else Databricks secret, else (local demo only) a generated one."""
    value = os.environ.get(cfg.key_env)
    if value:
        return value.encode()
    if cfg.databricks_secret:
        scope, _, name = cfg.databricks_secret.partition("/")
        try:
            from pyspark.dbutils import DBUtils
            from pyspark.sql import SparkSession

            dbutils = DBUtils(SparkSession.getActiveSession())
            return str(dbutils.secrets.get(scope=scope, key=name)).encode()
        except ImportError:
            log.debug("not on Databricks: no secret scope to read")
    if cfg.allow_generated_key:
        path = (
            Path(os.path.expanduser(os.environ.get(CACHE_ENV, DEFAULT_CACHE))) / "secrets" / "pseudonym.key"
        )
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
            log.warning(
                "no %s set: generated a local demo key in %s (never use this for real data)",
                cfg.key_env,
                path,
            )
        return path.read_text().strip().encode()
    raise MissingKeyError(
        f"no pseudonymisation key: set the environment variable {cfg.key_env}"
        + (f" or the Databricks secret {cfg.databricks_secret}" if cfg.databricks_secret else "")
        + " (for example: export SHOPREC_PSEUDONYM_KEY=$(openssl rand -hex 32))"
    )


def _padded(key: bytes, pad: int) -> bytes:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ pad for b in key)


def hmac_sha256_hex(value: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, UTF-8 bytes of ``value``) as 64 lowercase hex characters; null stays null."""
    inner = F.unhex(F.sha2(F.concat(F.lit(_padded(key, 0x36)), F.encode(value, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(_padded(key, 0x5C)), inner), 256)


def pseudonym(value: Column, key: bytes) -> Column:
    """The pseudonym of a raw user id (``u_`` + the first 32 hex characters of its HMAC)."""
    return F.when(value.isNull(), F.lit(None)).otherwise(
        F.concat(F.lit("u_"), F.substring(hmac_sha256_hex(value, key), 1, 32))
    )
