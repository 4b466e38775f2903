"""Fine-tuning throughput: the Petastorm loader against the training step and an in-memory
loader, tokenising beforehand against tokenising in the loader, and 2 Horovod processes against 1.

All measured in one run on one generated shop (the demo's settings, smaller), with the packaged
all-MiniLM-L6-v2 unless ``--model`` names another directory:

1. Petastorm loader alone (batches/s over the tokens table's snapshot files);
2. the training step alone (forward + backward + AdamW on batches already in memory);
3. an in-memory loader (torch ``DataLoader`` over a ``TensorDataset`` of the same rows);
4. tokenising in the loader instead (the fast tokenizer on each batch's texts);
5. ``train_worker`` through ``launch`` with 1 process and with 2 (gloo), samples/s, twice: with
   the machine's cores shared among the processes (1 process on all, 2 on half each), and with
   one core (torch thread) per process, as each process gets one GPU on a cluster: the second
   measures what data parallelism adds; the first what it adds on this machine.

Printed ratios: loader / step (goal >= 3x), loader / in-memory (goal >= 0.5x),
2 processes / 1 (goal >= 1.7x).

    SHOPREC_PSEUDONYM_KEY=bench .venv/bin/python bench/training.py --users 800 --steps 20
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import from_dict
from shoprec.datagen.job import generate
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all
from shoprec.features.job import build_gold
from shoprec.modeling import towers as tt
from shoprec.spark import get_spark
from shoprec.training import distributed as dist
from shoprec.training.data import make_loader, make_reader, snapshot_files
from shoprec.training.prepare import (
    ITEM_IDS,
    ITEM_INDEX,
    ITEM_MASK,
    ITEM_TEXT,
    LOADER_FIELDS,
    LOGQ,
    USER_IDS,
    USER_MASK,
    USER_TEXT,
    model_path,
    prepare,
)
from shoprec.training.train import TrainSpec, train_worker


def _rate(batches: object, limit: int) -> float:
    n, t0 = 0, time.perf_counter()
    for _ in batches:  # type: ignore[attr-defined]
        n += 1
        if n >= limit:
            break
    return n / (time.perf_counter() - t0)


def _step_rate(
    model: tt.TwoTower, opt: torch.optim.Optimizer, tensors: list[torch.Tensor], size: int
) -> float:
    """Training steps per second (forward, backward, AdamW) over the first few batches in memory,
    after one untimed step (the first pays for AdamW's state and the kernels' first calls: timed,
    it made whichever variant ran first look slower)."""
    batches = [
        {c: t[start : start + size] for c, t in zip(LOADER_FIELDS, tensors, strict=True)}
        for start in range(0, min(len(tensors[0]), 6 * size), size)
    ]
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == 1:
            t0 = time.perf_counter()
        loss = tt.in_batch_loss(
            model.users(batch[USER_IDS].long(), batch[USER_MASK].long()),
            model.items(batch[ITEM_IDS].long(), batch[ITEM_MASK].long()),
            batch[ITEM_INDEX],
            batch[LOGQ],
            0.05,
        )
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return (len(batches) - 1) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SHOPREC_PSEUDONYM_KEY", "bench-key")
    with tempfile.TemporaryDirectory() as root:
        cfg = from_dict(
            {
                "paths": {"root": root},
                "generator": {"users": args.users, "items": 300, "days": 14},
                "training": {"model_path": args.model, "batch_size": args.batch, "max_steps": args.steps},
            }
        )
        spark = get_spark(cfg.spark)
        generate(spark, cfg)
        ingest_all(spark, cfg)
        clean_all(spark, cfg)
        build_gold(spark, cfg)
        prepared = prepare(spark, cfg)
        files = snapshot_files(spark, prepared.location, {S.SPLIT: S.TRAIN})
        rows = delta.read(spark, prepared.location).where(F.col(S.SPLIT) == S.TRAIN)
        pdf = rows.select(*LOADER_FIELDS, USER_TEXT, ITEM_TEXT).toPandas()
        n_batches = len(pdf) // args.batch
        print(f"{len(pdf):,} training examples, batch {args.batch}, model {model_path(cfg)}")

        with make_reader(files, LOADER_FIELDS, num_epochs=None, shuffle=True) as reader:
            loader_rate = _rate(make_loader(reader, args.batch), n_batches)

        tensors = [torch.from_numpy(np.stack(pdf[c].to_numpy())) for c in LOADER_FIELDS]
        dataset = torch.utils.data.TensorDataset(*tensors)
        memory_rate = _rate(
            torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True), n_batches
        )

        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path(cfg), local_files_only=True)

        def tokenised() -> object:
            for start in range(0, len(pdf), args.batch):
                part = pdf.iloc[start : start + args.batch]
                yield (
                    tok(
                        list(part[USER_TEXT]),
                        padding="max_length",
                        truncation=True,
                        max_length=cfg.training.user_max_length,
                        return_tensors="pt",
                    ),
                    tok(
                        list(part[ITEM_TEXT]),
                        padding="max_length",
                        truncation=True,
                        max_length=cfg.training.item_max_length,
                        return_tensors="pt",
                    ),
                )

        tokenise_rate = _rate(tokenised(), n_batches)

        from shoprec.modeling.pretrained import load_encoder

        _, encoder = load_encoder(model_path(cfg))
        model = tt.TwoTower(encoder)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        step_rate = _step_rate(model, opt, tensors, args.batch)

        print(f"  Petastorm loader:        {loader_rate:8.1f} batches/s")
        print(f"  in-memory loader:        {memory_rate:8.1f} batches/s")
        print(
            f"  tokenising in the loader:{tokenise_rate:8.1f} batches/s (reading tokens: {loader_rate:.1f})"
        )
        print(f"  training step:           {step_rate:8.2f} steps/s")
        print(f"  loader / step: {loader_rate / step_rate:.0f}x (goal >= 3x)")
        print(f"  loader / in-memory: {loader_rate / memory_rate:.2f}x (goal >= 0.5x)")

        # (a) the machine's cores shared: 1 process on all of them against 2 on half each;
        # (b) one core per process, as one GPU per process on a cluster: what data parallelism adds
        cores = os.cpu_count() or 1
        for label, threads in (("all cores shared", None), ("1 core per process", 1)):
            rates = {}
            for procs in (1, 2):
                spec = TrainSpec(
                    files=files,
                    rows=len(pdf),
                    base_model=model_path(cfg),
                    output=str(Path(root, f"model-{procs}-{threads}")),
                    checkpoints=str(Path(root, f"ckpt-{procs}-{threads}")),
                    cfg=replace(cfg.training, threads=threads),
                )
                launcher = "horovod" if procs > 1 else "single"
                results = dist.launch(train_worker, procs, launcher, args=(spec,))
                seconds = max(r.seconds for r in results)
                rates[procs] = sum(r.examples for r in results) / seconds
                steps = sum(r.steps for r in results)
                print(f"  {label}, {procs} process(es): {rates[procs]:.1f} samples/s ({steps} steps)")
            print(f"  {label}: 2 processes / 1: {rates[2] / rates[1]:.2f}x (goal >= 1.7x; {cores} CPU cores)")


if __name__ == "__main__":
    main()
