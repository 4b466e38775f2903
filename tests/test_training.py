"""Fine-tuning end to end on a small shop with a tiny BERT: Petastorm shards, two Horovod
processes that stay in sync and learn, checkpoints, MLflow, evaluation of the result."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from conftest import small_cfg
from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.modeling import towers as tt
from shoprec.training.data import make_loader, make_reader, snapshot_files
from shoprec.training.job import train
from shoprec.training.prepare import ITEM_INDEX, LOADER_FIELDS, model_path, prepare

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def shop(spark: SparkSession, small_shop: ShoprecConfig, tiny_model_dir: Path) -> ShoprecConfig:
    cfg = small_cfg(
        Path(small_shop.paths.root),
        tiny_model_dir,
        evaluation={"ks": [10], "models": []},
        training={
            "batch_size": 16,
            "learning_rate": 1e-3,
            "user_max_length": 48,
            "item_max_length": 32,
            "checkpoint_every_steps": 5,
            "log_every_steps": 2,
            "warmup_steps": 2,
            "max_steps": 16,
            "ranker": {"epochs": 4, "batch_size": 64, "hidden": [32], "student_hidden": [8]},
        },
    )
    prepare(spark, cfg)
    return cfg


def test_in_batch_loss_masks_duplicates_and_corrects_for_popularity() -> None:
    torch.manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    items = users.clone()
    index = torch.tensor([0, 1, 2, 3])
    perfect = tt.in_batch_loss(users, items, index, None, 0.05)
    shuffled = tt.in_batch_loss(users, items.flip(0), index, None, 0.05)
    assert perfect < shuffled
    # a duplicate item in the batch is not a negative for the other row that has it
    dup = torch.tensor([0, 0, 2, 3])
    same = torch.stack([users[0], users[0], users[2], users[3]])
    masked = tt.in_batch_loss(same, same, dup, None, 0.05)
    unmasked = tt.in_batch_loss(same, same, index, None, 0.05)  # the twin counts as a negative
    assert masked < 0.05 and unmasked > 0.3
    # logq shifts logits per item: subtracting a constant changes nothing
    assert torch.isclose(tt.in_batch_loss(users, items, index, torch.full((4,), -2.0), 0.05), perfect)
    # hard negatives: a user's own positive among them is masked, a row without one (-1) too,
    # and a hard item close to the users makes the task harder
    one, zero = users[:1], torch.tensor([0])
    own = tt.in_batch_loss(one, one, zero, None, 0.05, one.clone(), zero)
    other = tt.in_batch_loss(one, one, zero, None, 0.05, one.clone(), torch.tensor([5]))
    assert float(own) == pytest.approx(0.0, abs=1e-6) and float(other) == pytest.approx(np.log(2), rel=1e-5)
    none = tt.in_batch_loss(users, items, index, None, 0.05, users.clone(), torch.full((4,), -1))
    assert torch.isclose(none, perfect)
    close = torch.nn.functional.normalize(users + 0.05 * torch.randn(4, 8), dim=-1)
    harder = tt.in_batch_loss(users, items, index, None, 0.05, close, torch.tensor([9, 9, 9, 9]))
    assert harder > perfect + 0.5


def test_hard_negatives_come_from_the_retrievers_top_and_never_the_positive(spark: SparkSession) -> None:
    from shoprec.config import RankerConfig
    from shoprec.modeling import ranker as rk
    from shoprec.training.ranker_job import ROW, hard_pairs

    examples = spark.createDataFrame(
        [("r1", S.TRAIN, "u1", "i1"), ("r2", S.VALID, "u2", "i3"), ("r3", S.TRAIN, "u3", "i5")],
        f"{ROW} string, {S.SPLIT} string, {S.USER_KEY} string, {S.POSITIVE_ITEM} string",
    )
    users = spark.createDataFrame(
        [("r1", [1.0, 0.0]), ("r2", [0.0, 1.0]), ("r3", [1.0, 0.0])],
        f"{ROW} string, {rk.USER_VECTOR} array<float>",
    )
    vectors = {"i1": [1.0, 0.0], "i2": [0.9, 0.1], "i3": [0.0, 1.0], "i4": [0.1, 0.9], "i5": [-1.0, 0.0]}
    items = spark.createDataFrame(list(vectors.items()), f"{S.ITEM_ID} string, {rk.ITEM_VECTOR} array<float>")
    # r1 = [1, 0]: its top 4 are its positive i1, then i2, i4, i3; r2's: its positive i3, then i4, i2, i1;
    # r3's positive i5 is the worst item for [1, 0], outside its top 4: no hard negatives for it
    pools = {"r1": {"i2", "i4", "i3"}, "r2": {"i4", "i2", "i1"}}
    rows = hard_pairs(spark, examples, users, items, RankerConfig(hard_negatives=2, hard_pool=4), 7).collect()
    by_row: dict[str, set[str]] = {}
    for r in rows:
        assert (r[rk.CLICK], r[rk.PURCHASE]) == (0.0, 0.0)
        assert (r[S.SPLIT], r[S.USER_KEY]) == ({"r1": (S.TRAIN, "u1"), "r2": (S.VALID, "u2")}[r[ROW]])
        assert r[rk.HARD] == 1.0
        by_row.setdefault(r[ROW], set()).add(r[S.ITEM_ID])
    assert {k: len(v) for k, v in by_row.items()} == {"r1": 2, "r2": 2}
    assert by_row["r1"] <= pools["r1"] and by_row["r2"] <= pools["r2"]
    top1 = hard_pairs(spark, examples, users, items, RankerConfig(hard_negatives=2, hard_pool=2), 7)
    assert sorted((r[ROW], r[S.ITEM_ID]) for r in top1.collect()) == [("r1", "i2"), ("r2", "i4")]


def test_each_example_is_read_once_per_epoch_across_ranks(spark: SparkSession, shop: ShoprecConfig) -> None:
    files = snapshot_files(spark, shop.table("training_tokens"), {S.SPLIT: S.TRAIN})
    expected = delta.read(spark, shop.table("training_tokens")).where(F.col(S.SPLIT) == S.TRAIN).count()
    assert len(files) >= 2
    seen: list[np.ndarray] = []
    for rank in range(2):
        with make_reader(files, LOADER_FIELDS, shard=rank, shard_count=2, shuffle=True, seed=3) as reader:
            shard = [b["user_input_ids"].numpy() for b in make_loader(reader, 7)]
        assert shard, f"rank {rank} got nothing"
        seen.append(np.concatenate(shard))
    assert sum(len(s) for s in seen) == expected
    assert make_loader is not None and ITEM_INDEX in LOADER_FIELDS


def fixed_batch_loss(spark: SparkSession, cfg: ShoprecConfig, model: tt.TwoTower, batches: int = 8) -> float:
    """The mean in-batch loss of ``model`` over the first ``batches`` unshuffled training batches."""
    from shoprec.training.prepare import ITEM_IDS, ITEM_MASK, LOGQ, USER_IDS, USER_MASK

    files = snapshot_files(spark, cfg.table("training_tokens"), {S.SPLIT: S.TRAIN})
    model.eval()
    total: list[float] = []
    with make_reader(files, LOADER_FIELDS, shard=0, shard_count=1, shuffle=False, seed=0) as reader:
        for batch in make_loader(reader, cfg.training.batch_size):
            if len(total) == batches:
                break
            with torch.no_grad():
                users = model.users(batch[USER_IDS].long(), batch[USER_MASK].long())
                items = model.items(batch[ITEM_IDS].long(), batch[ITEM_MASK].long())
                loss = tt.in_batch_loss(
                    users,
                    items,
                    batch[ITEM_INDEX],
                    batch[LOGQ].float() if cfg.training.logq_correction else None,
                    cfg.training.temperature,
                )
            total.append(float(loss))
    assert len(total) == batches, f"only {len(total)} training batches"
    return float(np.mean(total))


@pytest.mark.e2e
def test_two_horovod_processes_learn_in_sync_and_record_everything(
    spark: SparkSession, shop: ShoprecConfig
) -> None:
    from mlflow.tracking import MlflowClient

    run = train(spark, shop)
    assert len(run.results) == 2
    a, b = run.results
    assert a.final_weights_checksum == pytest.approx(b.final_weights_checksum, rel=0, abs=1e-6), (
        "ranks diverged"
    )
    losses = [loss for _, loss in a.losses]
    assert len(losses) >= 4 and all(np.isfinite(losses)), losses
    # it learned: the in-batch loss over the same fixed training batches, dropout off, is lower
    # with the trained weights than with the base model it started from (the logged losses are
    # one shuffled batch per rank each, too noisy over 16 steps to say so)
    from shoprec.modeling.pretrained import load_encoder

    _, encoder = load_encoder(model_path(shop))
    before = fixed_batch_loss(spark, shop, tt.TwoTower(encoder, shop.training.temperature))
    after = fixed_batch_loss(spark, shop, tt.load(run.model_dir)[1])
    assert after < before - 0.05, f"loss on fixed training batches did not fall: {before:.4f} -> {after:.4f}"
    assert (run.model_dir / tt.META).is_file() and (run.model_dir / "tokenizer_config.json").is_file()

    client = MlflowClient(run.tracking_uri)
    mlrun = client.get_run(run.mlflow_run_id)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["batch_size"] == "16"
    history = client.get_metric_history(run.mlflow_run_id, "train_loss")
    assert len(history) == len(losses)
    from shoprec.evaluation.job import evaluate_trained  # what `shoprec train` runs after training

    evaluate_trained(spark, shop, run.model_dir, run.tracking_uri, run.mlflow_run_id)
    assert "test_full_recall_at_10" in client.get_run(run.mlflow_run_id).data.metrics
    artifacts = {f.path for f in client.list_artifacts(run.mlflow_run_id, "model")}
    assert "model/towers.pt" in artifacts and "model/config.json" in artifacts

    # the saved model is what the evaluation scored: reload it and check it embeds as trained
    tokenizer, model, meta = tt.load(run.model_dir)
    assert meta["steps"] == a.steps
    batch = tokenizer(["recently: wireless earbuds"], return_tensors="pt")
    with torch.no_grad():
        vec = model.users(batch["input_ids"], batch["attention_mask"])
    assert vec.shape == (1, 32) and torch.isclose(vec.norm(), torch.tensor(1.0))

    # the ranking head, trained after the retriever by the same two processes, on its vectors
    from shoprec.modeling import ranker as rk

    assert run.ranker_dir == run.model_dir / "ranker" and len(run.ranker_results) == 2
    r0, r1 = run.ranker_results
    assert r0.checksum == pytest.approx(r1.checksum, rel=0, abs=1e-6), "ranker ranks diverged"
    assert r0.epoch_losses[-1] < r0.epoch_losses[0], r0.epoch_losses
    m = r0.metrics
    assert m["valid_ranker_click_auc"] > 0.6, m  # positives against random catalog items
    assert "valid_ranker_purchase_auc" in m and "valid_student_click_auc" in m
    teacher, student = rk.load(run.ranker_dir), rk.load(run.ranker_dir, student=True)
    assert rk.param_count(student.model) < rk.param_count(teacher.model)
    assert teacher.meta["weights"] == {"click": 1.0, "purchase": 1.0, "value": 0.0}
    assert mlrun.data.metrics["valid_ranker_click_auc"] == pytest.approx(m["valid_ranker_click_auc"])
    assert len(client.get_metric_history(run.mlflow_run_id, "ranker_loss")) == 4
    ranker_files = {f.path for f in client.list_artifacts(run.mlflow_run_id, "model/ranker")}
    assert {"model/ranker/ranker.pt", "model/ranker/student.pt"} <= ranker_files


@pytest.mark.e2e
def test_a_second_daily_cycle_over_unchanged_data_registers_no_new_version(
    spark: SparkSession, shop: ShoprecConfig
) -> None:
    """A day with nothing new for training re-uses the finished model: the gold tables are rebuilt
    (every table gets a new version, as the daily incremental run bumps some), training reads the
    same rows, and no new MLflow run or registered version appears. ``--force`` still trains."""
    from mlflow.tracking import MlflowClient

    from shoprec.features.job import build_gold

    def versions() -> list[str]:
        found = MlflowClient(first.tracking_uri).search_model_versions(
            f"name = '{shop.training.registered_model}'"
        )
        return sorted(v.version for v in found)

    def table_versions() -> list[int]:
        return [
            delta.for_location(spark, shop.table(n)).history(1).select("version").first()[0]  # type: ignore[index]
            for n in ("gold_training_examples", "gold_item_features", "gold_interactions")
        ]

    first = train(spark, shop)  # trains, or re-uses the earlier test's run of the same settings
    before, tables = versions(), table_versions()
    build_gold(spark, shop, full=True)  # the next day's features: same rows, new table versions
    assert all(a < b for a, b in zip(tables, table_versions(), strict=True)), "no table was rewritten"
    second = train(spark, shop)
    assert second.reused == "unchanged" and second.results == []
    assert second.registered_version == first.registered_version and second.model_dir == first.model_dir
    assert versions() == before, "a second version was registered for unchanged data"

    from dataclasses import replace

    weekly = replace(shop, training=replace(shop.training, retrain="weekly", seed=shop.training.seed + 1))
    assert train(spark, weekly).reused == "not due"  # changed settings wait for the weekly slot
    assert versions() == before


def test_the_content_fingerprint_ignores_row_order_and_sees_any_changed_value(spark: SparkSession) -> None:
    from shoprec.training.reuse import content_hash

    rows = [(f"u{i}", i, {"a": float(i), "b": 1.0}, [i, i + 1]) for i in range(50)]
    ddl = "user string, n int, shares map<string,double>, items array<int>"
    a = spark.createDataFrame(rows, ddl)
    b = spark.createDataFrame(list(reversed(rows)), ddl).repartition(3)
    assert content_hash(a) == content_hash(b)
    changed = [*rows[:10], ("u10", 10, {"a": 10.0, "b": 2.0}, [10, 11]), *rows[11:]]
    assert content_hash(spark.createDataFrame(changed, ddl)) != content_hash(a)
    assert content_hash(spark.createDataFrame(rows[:-1], ddl)) != content_hash(a)
    duplicated = [*rows, rows[0]]
    assert content_hash(spark.createDataFrame(duplicated, ddl)) != content_hash(a)


def test_the_spark_launcher_runs_horovod_in_spark_tasks(
    spark: SparkSession, shop: ShoprecConfig, tmp_path: Path
) -> None:
    """``training.launcher: spark``: the same training inside two Spark barrier tasks."""
    from dataclasses import replace

    cfg = replace(
        shop,
        paths=replace(shop.paths, models=str(tmp_path / "models"), checkpoints=str(tmp_path / "ckpt")),
        training=replace(
            shop.training,
            launcher="spark",
            max_steps=4,
            experiment="spark-launcher",
            ranker=replace(shop.training.ranker, enabled=False),  # the ranker's launch is the same call
            hard_negatives=True,
        ),
    )
    run = train(spark, cfg)
    # hard negatives came from the category-popularity list: same category, never the positive
    from shoprec.training.prepare import HARD_INDEX, HARD_TEXT

    tokens = delta.read(spark, cfg.table("training_tokens")).where(F.col(S.SPLIT) == S.TRAIN)
    items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.TRAIN)
    with_hard = tokens.where(F.col(HARD_INDEX) >= 0)
    assert with_hard.count() > 0.9 * tokens.count()
    assert with_hard.where(F.col(HARD_INDEX) == F.col(ITEM_INDEX)).count() == 0
    cats = items.select(F.col(S.ITEM_TEXT).alias(HARD_TEXT), F.col(S.TOP_CATEGORY).alias("hard_cat"))
    pos = items.select(F.col(S.ITEM_ID).alias(S.POSITIVE_ITEM), F.col(S.TOP_CATEGORY).alias("pos_cat"))
    joined = with_hard.join(cats, HARD_TEXT).join(pos, S.POSITIVE_ITEM)
    assert joined.where(F.col("hard_cat") != F.col("pos_cat")).count() == 0 and joined.count() > 0
    assert [r.rank for r in run.results] == [0, 1] and all(r.steps == 4 for r in run.results)
    a, b = run.results
    assert a.final_weights_checksum == pytest.approx(b.final_weights_checksum, rel=0, abs=1e-6)
    assert (run.model_dir / tt.META).is_file() and run.ranker_dir is None


@pytest.mark.e2e
def test_a_killed_training_resumes_from_its_checkpoint(
    spark: SparkSession, shop: ShoprecConfig, tmp_path: Path
) -> None:
    """A real ``shoprec train`` process is killed after its first checkpoint; the re-run resumes."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    root = Path(__file__).resolve().parents[1]
    conf = tmp_path / "conf"
    conf.mkdir()
    settings = shop.to_dict()
    settings.pop("env")
    settings["paths"] = {
        **settings["paths"],
        "checkpoints": str(tmp_path / "ckpt"),
        "models": str(tmp_path / "models"),
    }
    settings["training"] = {
        **settings["training"],
        "launcher": "single",
        "max_steps": 30,
        "checkpoint_every_steps": 4,
        "ranker": {**settings["training"]["ranker"], "enabled": False},
    }
    (conf / "t.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(settings, default=str))))
    cmd = [
        sys.executable,
        "-m",
        "shoprec.cli",
        "train",
        "--env",
        "t",
        "--conf-dir",
        str(conf),
        "--no-evaluate",
    ]
    env = {**os.environ, "SHOPREC_TEST_KEY": os.environ["SHOPREC_TEST_KEY"]}

    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while (
        not list((tmp_path / "ckpt").glob("*/ckpt-*.pt"))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = list((tmp_path / "ckpt").glob("*/ckpt-*.pt"))
    assert checkpoints, "no checkpoint before the kill"
    assert not list((tmp_path / "models").glob("*/towers.pt")), "killed before the end: no final model yet"

    # a checkpoint that cannot be read stops the resume with one line naming it, exit code 2
    bad = checkpoints[0].parent / "ckpt-999999.pt"
    bad.write_bytes(b"not a checkpoint")
    refused = subprocess.run(cmd, cwd=root, env=env, capture_output=True, timeout=600)
    err = refused.stderr.decode()
    assert refused.returncode == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("shoprec train: ") and "unreadable checkpoint" in last and bad.name in last, last
    bad.unlink()
    # -v: the INFO records (the resume among them) on the console, not only in the run's log file
    done = subprocess.run([*cmd, "-v"], cwd=root, env=env, capture_output=True, timeout=600)
    log = done.stderr.decode()
    assert done.returncode == 0, log[-3000:]
    assert "resuming from ckpt-" in log and "resuming MLflow run" in log
    model_dir = next((tmp_path / "models").glob("*/towers.pt")).parent
    _, _, meta = tt.load(model_dir)
    # the step count runs on across the kill: past the checkpoint it resumed from, to the epoch's end
    resumed_at = int(log.split("resuming from ckpt-")[1].split(".")[0])
    assert meta["steps"] > resumed_at


def test_lora_and_freezing_train_fewer_weights_and_save_a_plain_encoder(tmp_path: Path) -> None:
    from conftest import build_tiny_bert

    tokenizer, encoder = build_tiny_bert(tmp_path / "src")
    total = sum(p.numel() for p in encoder.parameters())
    tt.freeze_lower(encoder, 1)
    frozen = sum(p.numel() for p in encoder.parameters() if not p.requires_grad)
    assert 0 < frozen < total
    _, fresh = build_tiny_bert(tmp_path / "src2")
    model = tt.TwoTower(tt.with_lora(fresh, r=2, alpha=4, dropout=0.0))
    trainable = sum(p.numel() for p in model.encoder.parameters() if p.requires_grad)
    assert 0 < trainable < total / 5
    tt.save(model.eval(), tokenizer, tmp_path / "saved", {"steps": 0})
    _, loaded, meta = tt.load(tmp_path / "saved")
    assert meta["steps"] == 0 and not hasattr(loaded.encoder, "peft_config")
    ids = tokenizer(["wireless earbuds"], return_tensors="pt")
    with torch.no_grad():
        a = model.items(ids["input_ids"], ids["attention_mask"])
        b = loaded.items(ids["input_ids"], ids["attention_mask"])
    torch.testing.assert_close(a, b)


def _small_state(width: int = 4) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    model = torch.nn.Linear(width, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_a_checkpoint_that_cannot_be_resumed_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from shoprec.errors import ShoprecError
    from shoprec.training.train import _checkpoint, load_checkpoint

    ckpt = tmp_path / "ckpt"
    model, optimizer, scheduler = _small_state()
    _checkpoint(ckpt, model, optimizer, scheduler, epoch=1, batches_done=3, step=7)
    resumed = load_checkpoint(ckpt, *_small_state())
    assert resumed is not None and (resumed.epoch, resumed.batches_done, resumed.global_step) == (1, 3, 7)
    good = (ckpt / "ckpt-7.pt").read_bytes()

    def refused(reason: str) -> AbstractContextManager[pytest.ExceptionInfo[ShoprecError]]:
        file = re.escape(str(ckpt / "ckpt-7.pt"))
        fix = re.escape(f"; delete {ckpt} to start afresh")
        return pytest.raises(ShoprecError, match=rf"^{file}: unreadable checkpoint \({reason}.*\){fix}$")

    (ckpt / "ckpt-7.pt").write_bytes(good[: len(good) // 2])  # truncated
    with refused(""):
        load_checkpoint(ckpt, *_small_state())
    (ckpt / "ckpt-7.pt").write_bytes(b"not a checkpoint at all")  # corrupted
    with refused(""):
        load_checkpoint(ckpt, *_small_state())
    (ckpt / "ckpt-7.pt").write_bytes(good)
    with refused("RuntimeError: Error"):  # another model's weights
        load_checkpoint(ckpt, *_small_state(width=3))
    state = torch.load(ckpt / "ckpt-7.pt", weights_only=False)
    del state["scheduler"]
    torch.save(state, ckpt / "ckpt-7.pt")
    with refused("no scheduler"):
        load_checkpoint(ckpt, *_small_state())

    (ckpt / "ckpt-7.pt").write_bytes(good)
    (ckpt / "ckpt-final.pt").write_bytes(good)  # a name that is not ckpt-<step>.pt
    stray = re.escape(str(ckpt / "ckpt-final.pt"))
    with pytest.raises(ShoprecError, match=rf"^{stray}: unreadable checkpoint \(its name is not ckpt-<step>"):
        load_checkpoint(ckpt, *_small_state())


def test_the_single_launcher_reports_a_corrupted_checkpoint_as_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from shoprec.config import from_dict
    from shoprec.errors import ShoprecError
    from shoprec.training import distributed as dist
    from shoprec.training.train import TrainSpec, train_worker

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "ckpt-4.pt").write_bytes(b"\x80\x04 truncated")
    training = from_dict({"training": {"launcher": "single", "batch_size": 4}}).training
    spec = TrainSpec([], 8, str(tiny_model_dir), str(tmp_path / "model"), str(ckpt), training)
    fix = re.escape(f"; delete {ckpt} to start afresh")
    with pytest.raises(
        ShoprecError, match=rf"^{re.escape(str(ckpt))}/ckpt-4\.pt: unreadable checkpoint .*{fix}$"
    ):
        dist.launch(train_worker, 1, "single", args=(spec,))


def test_a_damaged_retriever_directory_names_the_file_and_says_retrain(tmp_path: Path) -> None:
    from conftest import build_tiny_bert
    from shoprec.errors import ShoprecError

    tokenizer, encoder = build_tiny_bert(tmp_path / "src")
    saved = tmp_path / "saved"
    tt.save(tt.TwoTower(encoder).eval(), tokenizer, saved, {"steps": 0})
    good = (saved / tt.TOWERS).read_bytes()
    (saved / tt.TOWERS).write_bytes(good[: len(good) // 2])
    towers = re.escape(str(saved / tt.TOWERS))
    pattern = rf"^{towers}: damaged retriever \(.+\); retrain with `shoprec train`$"
    with pytest.raises(ShoprecError, match=pattern):
        tt.load(saved)
    torch.save({"user_proj": {}}, saved / tt.TOWERS)  # no item tower
    with pytest.raises(ShoprecError, match=pattern):
        tt.load(saved)
    (saved / tt.TOWERS).write_bytes(good)
    (saved / tt.META).write_text("{")
    with pytest.raises(ShoprecError, match=rf"^{re.escape(str(saved / tt.META))}: damaged retriever"):
        tt.load(saved)


def test_a_runs_samples_per_second_counts_the_fine_tuning_time_alone() -> None:
    import dataclasses

    from shoprec.training.job import TrainRun
    from shoprec.training.train import TrainResult

    results = [TrainResult(0, 5, 300, 9.0), TrainResult(1, 5, 300, 10.0)]
    run = TrainRun(Path("m"), "run", "sqlite://", results, seconds=60.0, examples=600, train_seconds=10.0)
    assert run.samples_per_second == 60.0  # as MLflow's samples_per_second: 600 examples in 10 s
    assert dataclasses.replace(run, train_seconds=0.0).samples_per_second == 0.0
