"""Reading robustlab checkpoints safely (``weights_only=True``) and rebuilding their model."""

import pickle
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from robustlab.errors import RobustlabError

META_KEY = "robustlab"
MODEL_PREFIX = "model."
INFERENCE_PREFIX = "inference."
DATA_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "data"


def safe_load(path: str | Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: a missing file, a pickled payload or a file that is not
    PyTorch's is a one-line :class:`RobustlabError` naming ``what`` the file should be and ending in ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"{what} not found: {path}", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RobustlabError(
            f"{path} holds pickled Python objects, refused unloaded (weights_only=True)",
            "re-save plain tensors (torch.save(model.state_dict(), path)) or use a robustlab checkpoint",
        ) from None
    except Exception as err:  # torch.load raises many types on foreign files
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise RobustlabError(f"{path} is not a readable PyTorch {what} ({reason})", fix) from None


def check_finite(weights: dict[str, Any], path: str | Path) -> None:
    """A one-line error if a floating-point tensor of ``weights`` holds NaN or infinity."""
    bad = [k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise RobustlabError(
            f"{path} has NaN or infinite weights in {len(bad)} tensor(s), first {', '.join(bad[:3])}",
            "evaluate weights of a run that trained without diverging (lower the learning rate and retrain)",
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``train.py`` without executing any pickled code."""
    ckpt = safe_load(path, "checkpoint", "pass ckpt= the path of a .ckpt that train.py printed")
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        raise RobustlabError(
            f"{path} is not a robustlab checkpoint (no '{META_KEY}' metadata)",
            "pass a .ckpt written by robustlab's train.py, or other weights as model=<architecture> weights=PATH "
            "(README, Evaluating any model)",
        )
    check_finite(ckpt["state_dict"], path)
    upgrade(ckpt[META_KEY])
    return ckpt


def upgrade(meta: dict[str, Any]) -> None:
    """Bring the metadata of a checkpoint written by an older ``train.py`` up to date, in place: a data config
    without a ``family`` and ``threat`` budgets gets those of the data config file of the same ``_target_``."""
    data = meta.get("data") or {}
    if "threat" in data and "family" in data:
        return
    for path in sorted(DATA_CONFIGS.glob("*.yaml")):
        node = OmegaConf.load(path)
        if node.get("_target_") == data.get("_target_"):
            data.setdefault("family", node.get("family"))
            data.setdefault("threat", OmegaConf.to_container(node.get("threat")))
            return


def _weights(ckpt: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Instantiate the checkpoint's model config and load its weights.

    A defense that changes inference (a transform, a vote, a detector) saves a Hydra node under
    ``meta["inference"]``: it is instantiated with ``net=`` the classifier, and its own weights are the
    checkpoint's ``inference.*`` entries (if any). The result is what evaluation attacks."""
    meta = ckpt[META_KEY]
    model = instantiate(meta["model"])
    model.load_state_dict(_weights(ckpt, MODEL_PREFIX))
    if meta.get("inference"):
        model = instantiate(meta["inference"], net=model)
        extra = _weights(ckpt, INFERENCE_PREFIX)
        if extra:
            model.load_state_dict(extra)
    return model


def load_model(path: str | Path) -> nn.Module:
    """The eval-mode ``nn.Module`` (taking [0,1] images) stored in a ``train.py`` checkpoint."""
    return build_model(read_checkpoint(path)).eval()
