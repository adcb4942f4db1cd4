"""Experiment loggers: Weights & Biases, online with a login, otherwise offline."""

import netrc
import os

from lightning.pytorch.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """True if W&B credentials are configured (``WANDB_API_KEY`` or a ``~/.netrc`` entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_logger(project: str = "robustlab", save_dir: str = ".", mode: str | None = None, **kwargs) -> WandbLogger:
    """A ``WandbLogger`` whose mode is ``mode``, else ``$WANDB_MODE``, else online if logged in
    and offline (synced later with ``wandb sync``) if not."""
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, mode=mode, **kwargs)
