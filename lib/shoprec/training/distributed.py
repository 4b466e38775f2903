"""The one place that knows how training processes are started and talk to each other.

Horovod (over gloo on CPUs here, NCCL on GPU clusters) is the default; the same function can run
in this process alone. A training function takes no arguments about distribution: it asks
:func:`rank` and :func:`size` and wraps its optimizer with :func:`distributed_optimizer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
Backend = Literal["horovod", "spark", "single"]
_backend: Backend = "single"


def launch(
    fn: Callable[..., T], num_proc: int = 1, backend: Backend = "horovod", args: tuple[Any, ...] = ()
) -> list[T]:
    """Run ``fn(*args)`` in ``num_proc`` processes and return each rank's result, in rank order."""
    if backend == "single":
        if num_proc != 1:
            raise ValueError(f"backend 'single' runs one process, not {num_proc}")
        return [_in_single(fn, args)]
    if backend == "spark":
        # Horovod in Spark barrier tasks: one per process, on whichever executors have free slots
        # (GPU executors on a cluster). Needs a running SparkSession; fn and args are pickled to them.
        import horovod.spark

        log.info("starting %d Horovod processes in Spark tasks", num_proc)
        on_spark: list[T] = horovod.spark.run(
            _in_horovod, args=(fn, args), num_proc=num_proc, use_gloo=True, verbose=0
        )
        return on_spark
    import horovod

    log.info("starting %d Horovod processes over gloo", num_proc)
    results: list[T] = horovod.run(_in_horovod, args=(fn, args), np=num_proc, use_gloo=True, verbose=0)
    return results


def _in_single(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _backend
    _backend = "single"
    return fn(*args)


def _in_horovod(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _backend
    import horovod.torch as hvd

    hvd.init()
    _backend = "horovod"  # the same collectives however the processes were started
    try:
        return fn(*args)
    finally:
        hvd.shutdown()


def rank() -> int:
    if _backend == "horovod":
        import horovod.torch as hvd

        return int(hvd.rank())
    return 0


def size() -> int:
    if _backend == "horovod":
        import horovod.torch as hvd

        return int(hvd.size())
    return 1


def allreduce_mean(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """The mean of ``tensor`` over all processes (itself, alone)."""
    if _backend == "horovod":
        import horovod.torch as hvd

        reduced: torch.Tensor = hvd.allreduce(tensor, name=name, op=hvd.Average)
        return reduced
    return tensor


def broadcast_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, prefix: str = ""
) -> None:
    """Make every process start from rank 0's weights (and optimizer state). ``prefix`` keeps the
    collective names of two models in one process apart (a teacher and its student)."""
    if _backend == "horovod":
        import horovod.torch as hvd

        hvd.broadcast_parameters({f"{prefix}{k}": v for k, v in model.state_dict().items()}, root_rank=0)
        if optimizer is not None:
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)


def join() -> None:
    """Wait here until every process has reached it. A process that has no more batches calls it,
    and the others' allreduces go on without it instead of hanging (uneven shards)."""
    if _backend == "horovod":
        import horovod.torch as hvd

        hvd.join()


def distributed_optimizer(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, prefix: str = ""
) -> torch.optim.Optimizer:
    """Wrap ``optimizer`` so gradients are averaged over processes before each step."""
    if _backend == "horovod":
        import horovod.torch as hvd

        opt: torch.optim.Optimizer = hvd.DistributedOptimizer(
            optimizer, named_parameters=[(f"{prefix}{n}", p) for n, p in model.named_parameters()]
        )
        return opt
    return optimizer
