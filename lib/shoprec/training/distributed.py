"""The one place that knows how training processes are started and talk to each other.

Horovod (over gloo on CPUs here, NCCL on GPU clusters) is the default; the same function can run
in this process alone. A training function takes no arguments about distribution: it asks
:func:`rank` and :func:`size` and wraps its optimizer with :func:`distributed_optimizer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)
T = TypeVar("T")
Backend = Literal["horovod", "spark", "single"]
_backend: Backend = "single"


def launch(
    fn: Callable[..., T], num_proc: int = 1, backend: Backend = "horovod", args: tuple[Any, ...] = ()
) -> list[T]:
    """Run ``fn(*args)`` in ``num_proc`` processes and return each rank's result, in rank order. A
    :class:`ShoprecError` in any rank is raised here, with its one-line message."""
    if backend == "single":
        if num_proc != 1:
            raise ValueError(f"backend 'single' runs one process, not {num_proc}")
        return [_in_single(fn, args)]  # a ShoprecError in fn propagates as it is
    if backend == "spark":
        # Horovod in Spark barrier tasks: one per process, on whichever executors have free slots
        # (GPU executors on a cluster). Needs a running SparkSession; fn and args are pickled to them.
        import horovod.spark

        log.info("starting %d Horovod processes in Spark tasks", num_proc)
        on_spark: list[T | Refused] = horovod.spark.run(
            _in_horovod, args=(fn, args), num_proc=num_proc, use_gloo=True, verbose=0
        )
        return _unless_refused(on_spark)
    import horovod

    log.info("starting %d Horovod processes over gloo", num_proc)
    results: list[T | Refused] = horovod.run(
        _in_horovod, args=(fn, args), np=num_proc, use_gloo=True, verbose=0
    )
    return _unless_refused(results)


@dataclass(frozen=True)
class Refused:
    """What a Horovod rank returns instead of raising: an exception in a rank reaches the driver only
    as Horovod's RuntimeError and a worker traceback, losing a :class:`ShoprecError`'s one-line fix.
    ``message`` is that error's; ``None`` when the rank stopped because another did (its collective
    failed once that rank shut Horovod down), ``detail`` then saying how."""

    rank: int
    message: str | None
    detail: str = ""


def _unless_refused(results: list[T | Refused]) -> list[T]:
    """The ranks' results, or the first refusal (lowest rank) raised as a :class:`ShoprecError`."""
    refused = [r for r in results if isinstance(r, Refused)]
    for r in refused:
        if r.message is not None:
            raise ShoprecError(r.message)
    if refused:  # collectives failed with no rank saying why: Horovod's own failure
        raise RuntimeError(f"training rank {refused[0].rank}: {refused[0].detail}")
    return [r for r in results if not isinstance(r, Refused)]


def _in_single(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _backend
    _backend = "single"
    return fn(*args)


def _in_horovod(fn: Callable[..., T], args: tuple[Any, ...]) -> T | Refused:
    global _backend
    import horovod.torch as hvd

    hvd.init()
    _backend = "horovod"  # the same collectives however the processes were started
    from horovod.common.exceptions import HorovodInternalError

    rank = int(hvd.rank())
    try:
        return fn(*args)
    except ShoprecError as e:
        log.error("rank %d: %s", rank, e)
        return Refused(rank, str(e))
    except HorovodInternalError as e:  # most likely another rank refused and shut Horovod down
        return Refused(rank, None, str(e).splitlines()[0] if str(e) else type(e).__name__)
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
