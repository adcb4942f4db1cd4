"""Reading robustlab checkpoints safely (``weights_only=True``) and rebuilding their model."""
import pickle
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from robustlab.errors import RobustlabError

META_KEY = "robustlab"
MODEL_PREFIX = "model."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``train.py`` without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"checkpoint not found: {path}", "pass ckpt= the path that train.py printed")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RobustlabError(f"{path} holds pickled Python objects, refused unloaded (weights_only=True)",
                             "use a checkpoint written by robustlab's train.py, or re-save plain tensors") from None
    except Exception as err:  # torch.load raises many types on foreign files
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise RobustlabError(f"{path} is not a readable PyTorch checkpoint ({reason})",
                             "pass a .ckpt written by robustlab's train.py") from None
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        raise RobustlabError(f"{path} is not a robustlab checkpoint (no '{META_KEY}' metadata)",
                             "pass a .ckpt written by robustlab's train.py")
    return ckpt


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Instantiate the checkpoint's model config and load its weights."""
    model = instantiate(ckpt[META_KEY]["model"])
    weights = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    model.load_state_dict(weights)
    return model


def load_model(path: str | Path) -> nn.Module:
    """The eval-mode ``nn.Module`` (taking [0,1] images) stored in a ``train.py`` checkpoint."""
    return build_model(read_checkpoint(path)).eval()
