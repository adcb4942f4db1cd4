"""Small helpers shared by defenses and callbacks."""
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchmetrics import Metric
from tqdm.auto import tqdm


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


def progress_bar(trainer, desc: str, enabled: bool = True) -> tqdm:
    """A bar over the test batches, shown on rank zero when ``enabled``; otherwise a no-op bar."""
    return tqdm(total=sum(trainer.num_test_batches), desc=desc, leave=True, dynamic_ncols=True,
                disable=not (enabled and trainer.is_global_zero))


def step_logits(pl_module: nn.Module, outputs, x: torch.Tensor) -> torch.Tensor:
    """The logits of the evaluation step that produced ``outputs`` (a robustlab module's eval step returns
    them), or, for a module whose step does not, a fresh forward pass of ``x`` without gradients."""
    logits = outputs.get("logits") if isinstance(outputs, dict) else None
    if logits is None:
        with torch.no_grad():
            logits = pl_module(x)
    return logits


def synced_states(metric: Metric) -> dict[str, torch.Tensor]:
    """A metric's states reduced over all processes; ``compute()`` would un-sync them afterwards,
    so counts read after it are per process."""
    with metric.sync_context():
        return {name: value.clone() for name, value in metric.metric_state.items()}
