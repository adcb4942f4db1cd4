"""The evaluation journal: after every test batch, each process writes what its evaluations have accumulated, so
that ``evaluate.py resume=true`` skips the finished batches and ends with the report of an uninterrupted run.

One file per process, ``<run dir>/journal/rank<r>.pt``, rewritten atomically after each batch, the previous
generation kept as ``rank<r>.prev.pt``: a file that cannot be read (a disk fault, a copy cut short) falls back to
the previous one, which redoes one more batch. Each file carries the run's key (a hash of the model's weights
and the resolved configuration) and the configuration itself, so resuming another run is a one-line error naming
what differs."""

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric

from robustlab.errors import RobustlabError
from robustlab.utils import save_atomic

VERSION = 1


def run_key(identity: dict[str, Any]) -> str:
    """SHA-256 of ``identity`` (the model's weight hashes and the resolved config) as canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _metrics(module: torch.nn.Module) -> dict[str, Metric]:
    return {name: m for name, m in module.named_modules() if isinstance(m, Metric)}


def _to(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def capture(value: Any) -> Any:
    """A journal copy of one journaled attribute: a module's metric states (by submodule name) and update counts,
    or a deep copy of a plain value (numbers, dicts, tensors) on the CPU."""
    if isinstance(value, torch.nn.Module):
        return {
            "__metrics__": {
                name: {"state": _to(copy.copy(m.metric_state), torch.device("cpu")), "updates": m._update_count}
                for name, m in _metrics(value).items()
            }
        }
    return _to(copy.deepcopy(value), torch.device("cpu"))


def restore(current: Any, saved: Any, device: torch.device) -> Any:
    """``current`` with the journaled ``saved`` put back (metric states in place; a plain value returned)."""
    if isinstance(current, torch.nn.Module):
        metrics = _metrics(current)
        for name, entry in saved["__metrics__"].items():
            metric = metrics[name]
            for key, value in entry["state"].items():
                setattr(metric, key, _to(value, device))
            metric._update_count, metric._computed = entry["updates"], None
        return current
    return _to(saved, device)


class Journal:
    """The journal of one process in ``directory`` for the run ``key`` (its ``config`` names what differs)."""

    def __init__(self, directory: str | Path, key: str, config: dict[str, Any], rank: int = 0):
        self.directory, self.key, self.config, self.rank = Path(directory), key, config, rank
        self.path = self.directory / f"rank{rank}.pt"
        self.previous = self.directory / f"rank{rank}.prev.pt"

    @classmethod
    def of(cls, options: dict[str, Any], world_size: int, rank: int) -> "Journal":
        """The journal of process ``rank`` of ``world_size`` for the run ``options`` describe (``directory`` and
        ``identity``, as :func:`robustlab.evaluate` builds them); the process count is part of the key."""
        identity = {**options["identity"], "world_size": world_size, "rank": rank}
        return cls(options["directory"], run_key(identity), identity, rank)

    def write(self, batches: int, states: dict[str, Any], spent: dict[str, Any]) -> None:
        entry = {
            "version": VERSION,
            "key": self.key,
            "config": self.config,
            "batches": batches,
            "states": states,
            "spent": spent,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self.path.is_file():
            os.replace(self.path, self.previous)
        save_atomic(entry, self.path)

    def _read(self, path: Path) -> dict | None:
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: the caller falls back or fails with one line
            return None
        return entry if isinstance(entry, dict) and entry.get("version") == VERSION else None

    def read(self) -> dict | None:
        """The latest readable entry of this process (None when the run has no journal yet); an entry of another
        run is a one-line error naming the first differing settings."""
        if not self.path.is_file() and not self.previous.is_file():
            return None
        entry = next((e for e in (self._read(p) for p in (self.path, self.previous) if p.is_file()) if e), None)
        if entry is None:
            raise RobustlabError(
                f"the journal {self.path} cannot be read (truncated or not a robustlab journal)",
                f"delete {self.directory} to start over, or run without resume=",
            )
        if entry["key"] != self.key:
            differs = _differences(entry["config"], self.config)
            raise RobustlabError(
                f"resume: the journal in {self.directory} is of another run (differs in {', '.join(differs[:4])})",
                "resume with the same model, data, attacks and seed, or start a new run without resume=",
            )
        return entry


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))]
    return [] if old == new else [path or "the model"]
