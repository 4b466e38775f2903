"""Horovod: two real processes over gloo, an allreduce and one DistributedOptimizer step."""

from __future__ import annotations

import sys

import cloudpickle
import pytest
import torch

from shoprec.errors import ShoprecError
from shoprec.training import distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
# Horovod's workers unpickle the function; they cannot import this test module, so send it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _one_step() -> dict[str, object]:
    rank, size = distributed.rank(), distributed.size()
    torch.manual_seed(100 + rank)  # different starting weights on each rank...
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    distributed.broadcast_state(model, opt)  # ...until rank 0's are broadcast
    opt = distributed.distributed_optimizer(opt, model)
    x = torch.full((8, 4), float(rank + 1))  # different data on each rank
    loss = (model(x) - 1.0).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    mean = distributed.allreduce_mean(torch.tensor([float(rank)]), name="rank_mean")
    return {
        "rank": rank,
        "size": size,
        "mean": float(mean.item()),
        "weights": torch.cat([p.detach().flatten() for p in model.parameters()]).tolist(),
    }


def test_two_processes_allreduce_and_step_to_identical_weights() -> None:
    results = distributed.launch(_one_step, num_proc=2)
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["size"] == 2 for r in results)
    assert all(r["mean"] == pytest.approx(0.5) for r in results)
    w0, w1 = results[0]["weights"], results[1]["weights"]
    assert w0 == w1, "averaged gradients leave the same weights on every rank"

    # And the step really moved the weights: compare with rank 0's broadcast start.
    torch.manual_seed(100)
    start = torch.cat([p.detach().flatten() for p in torch.nn.Linear(4, 1).parameters()]).tolist()
    assert w0 != start


def test_single_process_backend_runs_the_same_function() -> None:
    (result,) = distributed.launch(_one_step, num_proc=1, backend="single")
    assert result["rank"] == 0 and result["size"] == 1 and result["mean"] == 0.0


def _refuse_on_rank_one() -> int:
    if distributed.rank() == 1:
        raise ShoprecError("data/x.pt: unreadable checkpoint (truncated); delete data to start afresh")
    distributed.allreduce_mean(torch.tensor([1.0]), name="never_completes")  # rank 1 has shut down
    return distributed.rank()


def test_a_shoprec_error_in_a_rank_reaches_the_driver_as_itself() -> None:
    """Not Horovod's RuntimeError and a worker traceback: the user sees the one-line fix, even while
    the other rank waits in a collective the refusing one never joins."""
    with pytest.raises(ShoprecError, match=r"^data/x\.pt: unreadable checkpoint \(truncated\); delete data"):
        distributed.launch(_refuse_on_rank_one, num_proc=2)
