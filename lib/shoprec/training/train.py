"""Data-parallel fine-tuning of the two-tower retriever: Petastorm → PyTorch, Horovod between processes.

Every process (``launch``): builds the same model from the same seed, takes rank 0's weights and
optimizer state (``broadcast_state``), reads its own shard of the tokens table's current snapshot
(row groups ``rank, rank + n, ...``, reshuffled each epoch), and steps a Horovod
``DistributedOptimizer`` (gradients averaged across processes before each step), with the
learning rate scaled by the number of processes. Shards may differ in size; a process that runs
out first calls ``join`` so the others finish their epoch without waiting on it.

Rank 0 alone logs (progress bar, MLflow) and writes checkpoints. A checkpoint holds the model,
optimizer, scheduler, epoch and the batches already done in it; a restarted run loads the newest
and skips that many batches of the same (seeded) epoch order, so it resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shoprec import errors
from shoprec.config import TrainingConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import towers as tt
from shoprec.training import distributed as dist
from shoprec.training.data import make_loader, make_reader
from shoprec.training.prepare import (
    HARD_FIELDS,
    HARD_IDS,
    HARD_INDEX,
    HARD_MASK,
    ITEM_IDS,
    ITEM_INDEX,
    ITEM_MASK,
    LOADER_FIELDS,
    LOGQ,
    USER_IDS,
    USER_MASK,
)

log = logging.getLogger(__name__)
#: What a checkpoint holds (``_checkpoint`` writes them all).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "batches_done", "global_step")


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training process needs; pickled to each one."""

    files: list[str]
    rows: int
    base_model: str
    output: str
    checkpoints: str
    cfg: TrainingConfig
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None


@dataclass
class TrainResult:
    rank: int
    steps: int
    examples: int
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int | None = None
    final_weights_checksum: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def _device(cfg: TrainingConfig) -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _unreadable(path: Path, reason: object) -> ShoprecError:
    """The one-line error for a checkpoint a run cannot resume from: the user's fix is a fresh start."""
    why = errors.reason(reason)
    return ShoprecError(f"{path}: unreadable checkpoint ({why}); delete {path.parent} to start afresh")


def _checkpoints(directory: Path) -> list[Path]:
    """The checkpoints in ``directory``, oldest step first; a ``ckpt-*.pt`` that is not ours is an error
    (guessing its step could resume from the wrong one)."""

    def step(path: Path) -> int:
        number = path.stem.removeprefix("ckpt-")
        if not (number.isascii() and number.isdigit()):
            raise _unreadable(path, "its name is not ckpt-<step>.pt")
        return int(number)

    return sorted(directory.glob("ckpt-*.pt"), key=step)


def _latest_checkpoint(directory: Path) -> Path | None:
    found = _checkpoints(directory)
    return found[-1] if found else None


def _save_checkpoint(directory: Path, state: dict[str, Any], step: int, keep: int = 2) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".ckpt-{step}.tmp"
    torch.save(state, tmp)
    tmp.rename(directory / f"ckpt-{step}.pt")  # atomic: a kill never leaves a half-written checkpoint
    for old in _checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)


@dataclass(frozen=True)
class Resume:
    """Where a restarted run picks up, from the checkpoint it loaded."""

    path: Path
    epoch: int
    batches_done: int
    global_step: int


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> Resume | None:
    """Load the newest checkpoint in ``directory`` into the model, optimizer and scheduler (``None``:
    there is none). A damaged or foreign one is a :class:`ShoprecError` naming it: resuming from
    part of a state would train on silently wrong weights or schedule."""
    latest = _latest_checkpoint(directory)
    if latest is None:
        return None
    try:
        state = torch.load(latest, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated zip, a bad pickle, an unreadable file: all mean the same here
        raise _unreadable(latest, e) from e
    if not isinstance(state, dict):
        raise _unreadable(latest, f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise _unreadable(latest, f"no {', '.join(missing)}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        resume = Resume(latest, int(state["epoch"]), int(state["batches_done"]), int(state["global_step"]))
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:  # another model's state
        raise _unreadable(latest, e) from e
    return resume


def _build(spec: TrainSpec, device: torch.device) -> tuple[Any, tt.TwoTower]:
    from shoprec.modeling.pretrained import load_encoder

    cfg = spec.cfg
    torch.manual_seed(cfg.seed)
    tokenizer, encoder = load_encoder(spec.base_model)
    tt.freeze_lower(encoder, cfg.freeze_layers)
    if cfg.lora.enabled:
        encoder = tt.with_lora(encoder, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout)
    return tokenizer, tt.TwoTower(encoder, cfg.temperature).to(device)


def steps_per_epoch(rows: int, batch_size: int, processes: int) -> int:
    """Optimizer steps per epoch (the largest shard's batches: shards differ by a row group or so)."""
    return max(1, math.ceil(rows / processes / batch_size))


def train_worker(spec: TrainSpec) -> TrainResult:
    """One training process (any rank): returns what it did; rank 0 also writes the model."""
    from transformers import get_linear_schedule_with_warmup

    cfg = spec.cfg
    rank, size = dist.rank(), dist.size()
    device = _device(cfg)
    torch.set_num_threads(cfg.threads or max(1, torch.get_num_threads() // max(1, size)))
    tokenizer, model = _build(spec, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate * size, weight_decay=cfg.weight_decay
    )
    per_epoch = steps_per_epoch(spec.rows, cfg.batch_size, size)
    total = min(cfg.max_steps or per_epoch * cfg.epochs, per_epoch * cfg.epochs)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, min(cfg.warmup_steps, total // 2), total
    )

    ckpt_dir = Path(spec.checkpoints)
    start_epoch, skip, global_step, resumed = 0, 0, 0, None
    loaded = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
    if loaded is not None:
        start_epoch, skip, global_step = loaded.epoch, loaded.batches_done, loaded.global_step
        resumed = global_step
        if rank == 0:
            log.info(
                "resuming from %s: epoch %d, batch %d, step %d",
                loaded.path.name,
                start_epoch,
                skip,
                global_step,
            )
    dist.broadcast_state(model, optimizer)
    optimizer = dist.distributed_optimizer(optimizer, model)
    use_amp = cfg.mixed_precision and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    tracker = _Tracker(spec) if rank == 0 else None
    result = TrainResult(rank, 0, 0, 0.0, resumed_from=resumed)
    started = time.perf_counter()
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=total, initial=global_step, desc="fine-tune", unit="step", disable=None)
    done = global_step >= total
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        model.train()
        reader = make_reader(
            spec.files,
            LOADER_FIELDS + (HARD_FIELDS if cfg.hard_negatives else ()),
            shard=rank,
            shard_count=size,
            num_epochs=1,
            shuffle=True,
            seed=cfg.seed + epoch,
        )
        batches_done = 0
        window: list[float] = []
        with reader:
            for batch in make_loader(reader, cfg.batch_size):
                if batches_done < skip:  # resuming: these were trained on before the restart
                    batches_done += 1
                    continue
                if len(batch[ITEM_INDEX]) < 2:
                    batches_done += 1
                    continue  # a softmax over one item teaches nothing
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    users = model.users(batch[USER_IDS].long().to(device), batch[USER_MASK].long().to(device))
                    items = model.items(batch[ITEM_IDS].long().to(device), batch[ITEM_MASK].long().to(device))
                    hard = hard_index = None
                    if cfg.hard_negatives:
                        hard = model.items(
                            batch[HARD_IDS].long().to(device), batch[HARD_MASK].long().to(device)
                        ).float()
                        hard_index = batch[HARD_INDEX].to(device)
                    loss = tt.in_batch_loss(
                        users.float(),
                        items.float(),
                        batch[ITEM_INDEX].to(device),
                        batch[LOGQ].float().to(device) if cfg.logq_correction else None,
                        cfg.temperature,
                        hard,
                        hard_index,
                    )
                model.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                scheduler.step()
                batches_done += 1
                global_step += 1
                result.steps += 1
                result.examples += len(batch[ITEM_INDEX])
                window.append(float(loss.detach()))
                if global_step % cfg.log_every_steps == 0 or global_step == total:
                    mean = float(
                        dist.allreduce_mean(torch.tensor(sum(window) / len(window)), f"loss.{global_step}")
                    )
                    window = []
                    result.losses.append((global_step, mean))
                    if tracker:
                        tracker.metric("train_loss", mean, global_step)
                        tracker.metric("learning_rate", scheduler.get_last_lr()[0], global_step)
                    if progress:
                        progress.set_postfix(loss=f"{mean:.4f}")
                if progress:
                    progress.update(1)
                if rank == 0 and global_step % cfg.checkpoint_every_steps == 0:
                    _checkpoint(ckpt_dir, model, optimizer, scheduler, epoch, batches_done, global_step)
                if global_step >= total:
                    done = True
                    break
        if batches_done == 0:
            raise ShoprecError(
                f"rank {rank} read no training examples in epoch {epoch} from {len(spec.files)} files; "
                "check that training_tokens has rows in its train split (`shoprec train` rewrites it)"
            )
        dist.join()
        skip = 0
        if rank == 0 and not done:
            _checkpoint(ckpt_dir, model, optimizer, scheduler, epoch + 1, 0, global_step)
    result.seconds = time.perf_counter() - started
    result.final_weights_checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    if progress:
        progress.close()
    if rank == 0:
        model.eval()
        meta = {
            "base_model": spec.base_model,
            "user_max_length": cfg.user_max_length,
            "item_max_length": cfg.item_max_length,
            "history_items": cfg.history_items,
            "steps": global_step,
        }
        tt.save(model.cpu(), tokenizer, Path(spec.output), meta)
        log.info(
            "fine-tuned %d steps, %.1f samples/s on this process -> %s",
            result.steps,
            result.samples_per_second,
            spec.output,
        )
        if tracker:
            tracker.metric("samples_per_second_rank0", result.samples_per_second, global_step)
    return result


def _checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    epoch: int,
    batches_done: int,
    step: int,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "batches_done": batches_done,
        "global_step": step,
    }
    _save_checkpoint(directory, state, step)


class _Tracker:
    """Rank 0's MLflow client, writing into the run the launcher opened."""

    def __init__(self, spec: TrainSpec) -> None:
        self.client = None
        self.run_id = spec.mlflow_run_id
        if spec.mlflow_run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(spec.tracking_uri)

    def metric(self, key: str, value: float, step: int) -> None:
        if self.client and self.run_id:
            self.client.log_metric(self.run_id, key, value, step=step)
