"""Models from outside robustlab's ``train.py``: any class with a state dict, TorchScript, ONNX, timm,
torchvision and RobustBench models, each an ``nn.Module`` taking [0,1] images (configs/model/*.yaml).

Weights are read without running pickled code (``weights_only=True`` or safetensors), whatever their
layout; :func:`describe` gives the report's record of where a model came from."""

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.checkpoint import check_finite, safe_load
from robustlab.errors import RobustlabError
from robustlab.models.normalize import Normalize

#: Where trainers keep the state dict inside a saved dict (``torch.save({"state_dict": ...})`` and kin).
NESTED = ("state_dict", "model_state_dict", "model", "net", "state", "last")
#: Key prefixes added by ``DataParallel`` / ``DistributedDataParallel`` and by wrappers such as Lightning's.
PREFIXES = ("module.", "model.")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FIX_WEIGHTS = "pass weights= a state dict saved with torch.save(model.state_dict(), path) or a .safetensors file"


class External(nn.Module):
    """A third-party network behind robustlab's input convention: [0,1] images, normalised here with
    ``mean`` / ``std`` (none when both are null) before ``net``."""

    def __init__(self, net: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.net = net
        self.normalize = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a ``.safetensors`` file, or a ``torch.save`` file holding a state dict or a
    dict with it under one of :data:`NESTED` (read with ``weights_only=True``; pickled objects are refused)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(_file(path, "weights file", FIX_WEIGHTS)))
        except (SafetensorError, OSError) as err:
            raise RobustlabError(f"{path} is not a readable safetensors file ({err})", FIX_WEIGHTS) from None
    else:
        state = safe_load(path, "weights file", FIX_WEIGHTS)
    for _ in range(3):
        nested = next((state[k] for k in NESTED if isinstance(state, dict) and isinstance(state.get(k), dict)), None)
        if nested is None:
            break
        state = nested
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)} if isinstance(state, dict) else {}
    if not tensors:
        keys = ", ".join(map(str, list(state)[:5])) if isinstance(state, dict) else type(state).__name__
        raise RobustlabError(f"{path} holds no state dict of tensors (found: {keys})", FIX_WEIGHTS)
    check_finite(tensors, path)
    return tensors


def _strip(key: str) -> str:
    while key.startswith(PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:3]) or "none"


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights of ``path`` into ``model`` (into its ``net`` for an :class:`External`), matching the
    file's keys as saved, with ``module.`` / ``model.`` prefixes stripped, or with the prefix ``model.`` or
    ``net.`` added; normalisation buffers the file lacks keep the config's values. Anything else that does not
    fit is a one-line error naming the first keys."""
    target = model.net if isinstance(model, External) else model
    state = read_weights(path)
    want = set(target.state_dict())
    optional = {k for k in want if k.startswith("normalize.")}
    stripped = {_strip(k): v for k, v in state.items()}
    layouts = [state, stripped, *({p + k: v for k, v in stripped.items()} for p in ("model.", "net."))]
    fits = [s for s in layouts if want - optional <= set(s) <= want]
    if not fits:
        best = min(layouts, key=lambda s: len(want.symmetric_difference(s)))
        missing, unexpected = sorted(want - optional - set(best)), sorted(set(best) - want)
        raise RobustlabError(
            f"{path} does not fit {type(target).__name__}: {len(missing)} missing key(s) ({_first(missing)}), "
            f"{len(unexpected)} unexpected ({_first(unexpected)})",
            "pass weights saved from this architecture, or the model config (and kwargs) they were trained with",
        )
    try:
        target.load_state_dict(fits[0], strict=False)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise RobustlabError(
            f"{path} does not fit {type(target).__name__}: {first}",
            "pass the weights saved from this architecture, or set the model's sizes (num_classes, width) to theirs",
        ) from None
    return model


def _file(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"{what} not found: {path}", fix)
    return path


def custom(target: str, kwargs: dict | None = None, mean=None, std=None) -> External:
    """``target`` (``pkg.module.Class`` or a function returning a module) built with ``kwargs``."""
    module_name, _, attr = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise RobustlabError(
            f"model.target={target} cannot be imported ({err})",
            "give model.target=pkg.module.Class importable from this directory or the installed packages",
        ) from None
    try:
        net = factory(**(kwargs or {}))
    except TypeError as err:
        raise RobustlabError(
            f"{target}(**model.kwargs) failed: {err}", "give +model.kwargs={name: value} its arguments"
        ) from None
    if not isinstance(net, nn.Module):
        raise RobustlabError(
            f"{target} returned a {type(net).__name__}, not an nn.Module", "point model.target at a model class"
        )
    return External(net, mean, std)


def torchscript(path: str, mean=None, std=None) -> External:
    """A TorchScript archive (``torch.jit.save``): its code graph runs, no pickled Python does."""
    path = _file(path, "TorchScript file", "give model.path= a file written by torch.jit.save")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # RuntimeError, or a zip error on other files
        raise RobustlabError(
            f"{path} is not a TorchScript archive ({str(err).splitlines()[0] if str(err) else type(err).__name__})",
            "give model.path= a file written by torch.jit.save (a state dict goes to weights=)",
        ) from None
    return External(net, mean, std)


def onnx(path: str, mean=None, std=None) -> External:
    """An ONNX graph converted to PyTorch (onnx2torch), so that white-box attacks get its gradients."""
    path = _file(path, "ONNX file", "give model.path= a .onnx file")
    import onnx as onnx_lib
    from onnx2torch import convert

    try:
        graph = onnx_lib.load(str(path))
        net = convert(graph)
    except Exception as err:  # a protobuf DecodeError, or an operator onnx2torch has no conversion for
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise RobustlabError(
            f"{path} cannot be converted to PyTorch ({reason})",
            "export the model with torch.onnx.export (opset >= 11, a dynamic batch axis) or give it as TorchScript",
        ) from None
    return External(net, mean, std)


def timm_model(name: str, num_classes: int, pretrained: bool = False, in_chans: int = 3, mean=None, std=None):
    """``timm.create_model(name)``; ``mean``/``std`` default to the architecture's pretrained config. Pretrained
    weights download (Hugging Face hub) only with ``pretrained=true``."""
    import timm

    if not timm.is_model(name):
        raise RobustlabError(
            f"timm has no model {name!r}", "pick a name from timm.list_models(), e.g. model.name=resnet18"
        )
    net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    config = getattr(net, "pretrained_cfg", {}) or {}
    mean = mean if mean is not None else config.get("mean", IMAGENET_MEAN)
    std = std if std is not None else config.get("std", IMAGENET_STD)
    return External(net, mean[:in_chans], std[:in_chans])


def torchvision_model(name: str, num_classes: int, pretrained: bool = False, mean=None, std=None) -> External:
    """``torchvision.models.get_model(name)``, normalised with ImageNet's statistics unless ``mean``/``std`` are
    given; pretrained weights (1000 classes) download only with ``pretrained=true``."""
    from torchvision import models

    if name not in models.list_models():
        raise RobustlabError(
            f"torchvision has no model {name!r}", "pick a name from torchvision.models.list_models(), e.g. resnet18"
        )
    kwargs = {"weights": "DEFAULT"} if pretrained else {"weights": None, "num_classes": num_classes}
    net = models.get_model(name, **kwargs)
    return External(net, mean if mean is not None else IMAGENET_MEAN, std if std is not None else IMAGENET_STD)


def robustbench_spec() -> importlib.machinery.ModuleSpec:
    """The installed ``robustbench`` package's import spec (its files), or a one-line error."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None:
        raise RobustlabError("the robustbench package is not installed", 'pip install -e ".[models]"')
    return spec


def robustbench_registry() -> dict:
    """RobustBench's model registry (``robustbench.model_zoo.model_dicts``). robustbench 1.1.1's top-level
    ``__init__`` imports ``autoattack`` and ``pkg_resources``, which its own dependencies no longer provide;
    the model zoo needs neither, so when that import fails it is read on its own."""
    try:
        from robustbench.model_zoo import model_dicts
    except ImportError:
        spec = robustbench_spec()
        package = types.ModuleType("robustbench")
        package.__path__, package.__spec__ = list(spec.submodule_search_locations), spec
        for name in [m for m in sys.modules if m == "robustbench" or m.startswith("robustbench.")]:
            del sys.modules[name]
        sys.modules["robustbench"] = package
        from robustbench.model_zoo import model_dicts
    return model_dicts


def check_download(path: Path) -> None:
    """A one-line error if ``path`` is not a PyTorch file: an HTML page (Google Drive's quota or sign-in page
    saved as the model), an empty or truncated download."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512)
    fix = f"delete {path} and rerun with a network (it downloads again), or place the model's file there"
    if b"<html" in head.lower() or head.lstrip().lower().startswith((b"<!doctype", b"<?xml")):
        raise RobustlabError(f"{path} is an HTML page, not model weights (a failed or quota-limited download)", fix)
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        raise RobustlabError(f"{path} is truncated ({size} bytes; its zip archive has no end record)", fix)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise RobustlabError(f"{path} is not a PyTorch file ({size} bytes, starts {head[:8]!r})", fix)


def _download(gdrive_id: str, path: Path) -> None:
    """Fetch RobustBench's file (Google Drive id) to ``path`` through a temporary file, checked before renaming."""
    import gdown

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        done = gdown.download(id=gdrive_id, output=str(partial), quiet=True)
    except Exception as err:  # requests' connection errors, gdown's FileURLRetrievalError
        done, reason = None, (str(err).splitlines() or [type(err).__name__])[0]
    else:
        reason = "no file came back"
    if not done or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RobustlabError(
            f"could not download {path.name} (Google Drive id {gdrive_id}): {reason}",
            f"run where the network allows, or place the file at {path}",
        )
    try:
        check_download(partial)
    except RobustlabError as error:
        partial.unlink(missing_ok=True)
        raise RobustlabError(error.problem.replace(str(partial), f"the download of {path.name}"), error.fix) from None
    partial.replace(path)


def robustbench_preprocessing(name: str, threat_model: str = "Linf", dataset: str = "imagenet") -> str | None:
    """The ImageNet preprocessing RobustBench's registry gives the model (None: unknown or not ImageNet)."""
    registry = robustbench_registry()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        return registry[BenchmarkDataset(dataset)][ThreatModel(threat_model)][name].get("preprocessing")
    except (ValueError, KeyError):
        return None


def robustbench_model(
    name: str,
    threat_model: str = "Linf",
    dataset: str = "cifar10",
    model_dir: str = "models",
    download: bool = True,
    mean=None,
    std=None,
) -> nn.Module:
    """A RobustBench model: architecture and preprocessing from RobustBench's registry, weights from
    ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` read with robustlab's safe loader (downloaded there first
    when missing, ``download`` is on and the network allows). RobustBench's architectures normalise inside;
    ``mean``/``std`` add a normalisation in front for one that does not."""
    registry = robustbench_registry()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        entries = registry[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except (ValueError, KeyError):
        datasets = ", ".join(d.value for d in registry)
        raise RobustlabError(
            f"RobustBench has no {dataset}/{threat_model} models",
            f"set model.dataset to one of {datasets} and model.threat_model to Linf, L2 or corruptions",
        ) from None
    if name not in entries:
        raise RobustlabError(
            f"RobustBench has no {dataset}/{threat_model} model {name!r}",
            f"pick one of {', '.join(list(entries)[:5])}, ... ({len(entries)} in all)",
        )
    entry = entries[name]
    if isinstance(entry.get("gdrive_id"), list):
        raise RobustlabError(f"{name} is an ensemble of several weight files", "evaluate a single-model entry")
    path = Path(model_dir) / dataset / threat_model / f"{name}.pt"
    if not path.is_file():
        if not download or not entry.get("gdrive_id"):
            raise RobustlabError(
                f"RobustBench weights not found: {path}", f"place {name}.pt there, or set model.download=true"
            )
        _download(entry["gdrive_id"], path)
    check_download(path)
    net = load_weights(entry["model"](), path)
    return External(net, mean, std) if mean is not None and std is not None else net


def describe(source: str, **fields: Any) -> dict[str, Any]:
    """The report's record of a model's origin: ``source``, the given fields, and every file's SHA-256."""
    record = {"source": source, **{k: v for k, v in fields.items() if v is not None}}
    for key in [k for k in record if k == "path" or k.endswith("_path") or k == "weights"]:
        record[key] = str(Path(record[key]).resolve())
        record[f"{key}_sha256"] = sha256(record[key])
    return record
