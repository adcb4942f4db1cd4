"""Small helpers shared by defenses and callbacks."""
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchmetrics import Metric


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own mode (not one global flag)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def synced_states(metric: Metric) -> dict[str, torch.Tensor]:
    """A metric's states reduced over all processes; ``compute()`` would un-sync them afterwards,
    so counts read after it are per process."""
    with metric.sync_context():
        return {name: value.clone() for name, value in metric.metric_state.items()}
