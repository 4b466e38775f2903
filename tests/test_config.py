from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from shoprec.config import ConfigError, is_table_path, load_config


@pytest.mark.parametrize("env", ["local", "cluster", "databricks"])
def test_every_shipped_environment_loads(env: str, conf_dir: Path) -> None:
    cfg = load_config(env, conf_dir=conf_dir)
    assert cfg.env == env
    assert cfg.table("bronze_events")  # every table resolves to a location


def test_overrides_are_typed_and_applied(conf_dir: Path) -> None:
    cfg = load_config(
        "local",
        ["generator.users=123", "generator.start_date=2025-03-01", "spark.master=local[1]"],
        conf_dir=conf_dir,
    )
    assert cfg.generator.users == 123
    assert cfg.generator.start_date == date(2025, 3, 1)
    assert cfg.spark.master == "local[1]"


def test_config_is_frozen(conf_dir: Path) -> None:
    cfg = load_config("local", conf_dir=conf_dir)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.generator.users = 1  # type: ignore[misc]


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("generator:\n  userz: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config("bad", conf_dir=tmp_path)
    assert "generator.userz" in str(err.value)
    assert "bad.yaml" in str(err.value)
    assert "unknown key" in str(err.value)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("generator:\n  users: lots\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: generator\.users: .*integer.*'lots'"):
        load_config("bad", conf_dir=tmp_path)


def test_out_of_range_value_names_key(conf_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set generator.bad_row_rate=2: generator\.bad_row_rate"):
        load_config("local", ["generator.bad_row_rate=2"], conf_dir=conf_dir)


def test_unknown_override_names_override(conf_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set training\.epochz=3: training\.epochz: unknown key"):
        load_config("local", ["training.epochz=3"], conf_dir=conf_dir)


def test_malformed_override(conf_dir: Path) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("local", ["generator.users"], conf_dir=conf_dir)


def test_unknown_environment_lists_available(conf_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment 'prod'.*available: cluster, databricks, local"):
        load_config("prod", conf_dir=conf_dir)


def test_paths_expand_and_tables_can_be_names(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "paths:\n  root: /lake/x\ntables:\n  a: ${lake}/bronze/a\n  b: main.shop.b\n"
    )
    cfg = load_config("t", conf_dir=tmp_path)
    assert cfg.table("a") == "/lake/x/lake/bronze/a"
    assert cfg.table("b") == "main.shop.b"
    assert is_table_path(cfg.table("a")) and not is_table_path(cfg.table("b"))
    with pytest.raises(ConfigError, match=r"tables\.c: no such table"):
        cfg.table("c")


def test_unknown_reference_is_reported(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("tables:\n  a: ${nowhere}/a\n")
    with pytest.raises(ConfigError, match=r"tables\.a: unknown reference \$\{nowhere\}"):
        load_config("t", conf_dir=tmp_path).table("a")
