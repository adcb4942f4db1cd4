"""Proof that a metric's result is the same on one process or two (gloo, CPU)."""

import math
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _compute(make_metric, batches):
    metric = make_metric()
    for kwargs in batches:
        metric.update(**kwargs)
    return metric.compute()


def _worker(rank: int, world_size: int, port: int, make_metric, batches, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = _compute(make_metric, batches[rank::world_size])
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def distributed_result(make_metric, batches: list[dict], world_size: int = 2):
    """``make_metric().compute()`` after rank ``r`` of a gloo group updated ``batches[r::world_size]``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.pt")
        mp.start_processes(
            _worker, args=(world_size, _free_port(), make_metric, batches, out), nprocs=world_size, start_method="spawn"
        )
        return torch.load(out, weights_only=False)


def _assert_close(a, b, path="result"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys differ"
        for k in a:
            _assert_close(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        torch.testing.assert_close(
            torch.as_tensor(a).double(),
            torch.as_tensor(b).double(),
            equal_nan=True,
            rtol=1e-6,
            atol=1e-9,
            msg=lambda m: f"{path}: {m}",
        )
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a} != {b}"


def assert_same_on_two_processes(make_metric, batches: list[dict]):
    """Assert the 2-process gloo result equals the single-process one; return the latter.

    ``make_metric`` and every update's kwargs must be picklable (use ``functools.partial``). Give an odd
    number of batches of unequal sizes so the ranks see uneven shares."""
    single = _compute(make_metric, batches)
    _assert_close(single, distributed_result(make_metric, batches))
    return single
