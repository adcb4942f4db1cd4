"""Pieces shared by the train and evaluate tasks: instantiation, checks and loggers."""

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from robustlab.attacks.adaptive import EOT_SAMPLES, EVAL_DRAWS, adapt
from robustlab.attacks.base import Attack
from robustlab.data.base import ImageDataModule
from robustlab.errors import RobustlabError
from robustlab.evaluation import EvaluationLoop
from robustlab.metrics.attack_metric import AttackMetric
from robustlab.models.base import ImageClassifier
from robustlab.utils import atomic_path, keep_freed_memory


def check_compatible(model: nn.Module, data: ImageDataModule) -> None:
    """Fail at start-up, with one line naming both sides, if the model cannot take the data's images or labels: a
    robustlab classifier by the sizes it records, any other model by one forward pass on two blank images. A data set
    whose classes are only inferred from its labels (a folder, a tensor file) fits a model with at least as many."""
    have = (data.in_channels, data.image_size, data.num_classes)
    if isinstance(model, ImageClassifier):
        want = (model.in_channels, model.image_size, model.num_classes)
        if want[:2] == have[:2] and _classes_fit(want[2], data, f"model {type(model).__name__}"):
            return
        raise RobustlabError(
            f"model {type(model).__name__} expects {want[0]}x{want[1]}x{want[1]} images and {want[2]} classes but "
            f"data {data.name} has {have[0]}x{have[1]}x{have[1]} and {have[2]}",
            f"pick a model made for {data.name} (model=mnist_cnn for 1x28x28, model=resnet20 for 3x32x32) or set "
            f"model.in_channels={have[0]} model.image_size={have[1]} model.num_classes={have[2]}",
        )
    shape = f"{have[0]}x{have[1]}x{have[1]}"
    fix = f"set data.image_size / data.channels to what the model takes, or give the model made for {data.name}"
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, have[0], have[1], have[1], device=device))
    except Exception as err:  # whatever the foreign model raises on a wrong shape
        reason = ([line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__])[-1][:200]
        raise RobustlabError(f"the model cannot take the {data.name} data's {shape} images ({reason})", fix) from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(out) or out.ndim != 2:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise RobustlabError(
            f"the model returns {got} for 2 images of the {data.name} data, not logits of shape (2, classes)",
            "wrap the model so that forward returns one row of logits per image",
        )
    if not _classes_fit(out.shape[1], data, "the model"):
        raise RobustlabError(
            f"the model has {out.shape[1]} classes but the {data.name} data has {have[2]}",
            f"set model.num_classes={have[2]}, or data.num_classes={out.shape[1]} if the data uses the model's indices",
        )


def _classes_fit(classes: int, data: ImageDataModule, model: str) -> bool:
    """Whether a model of ``classes`` classes fits ``data``'s labels: the same number, or at least as many when the
    data's classes are only inferred from its labels (a one-line error names the labels that do not fit)."""
    if classes == data.num_classes:
        return True
    if getattr(data, "exact_classes", True):
        return False
    if classes >= data.num_classes:
        return True
    raise RobustlabError(
        f"the {data.name} data has labels up to {data.num_classes - 1}, outside {model}'s {classes} classes",
        f"give labels 0..{classes - 1} (the model's class indices), or a model with {data.num_classes} classes",
    )


def plain(cfg: Any) -> Any:
    """A resolved plain-container copy of a config node (safe for weights-only checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def make_attacks(cfg: DictConfig | None) -> dict[str, Attack]:
    return {name: instantiate(node) for name, node in (cfg or {}).items() if node is not None}


def adapted(attacks: dict[str, Attack], model: nn.Module, cfg: DictConfig) -> dict[str, Attack]:
    """``attacks`` made adaptive to ``model``'s declared inference-time defense (:func:`~robustlab.attacks.adapt`,
    ``cfg.eot_samples`` draws per gradient, ``cfg.eval_draws`` per black-box decision), unless ``adaptive=false``."""
    if not cfg.get("adaptive", True):
        return dict(attacks)
    eot, draws = cfg.get("eot_samples", EOT_SAMPLES), cfg.get("eval_draws", EVAL_DRAWS)
    return {name: adapt(attack, model, eot, draws) for name, attack in attacks.items()}


def make_metrics(cfg: DictConfig | None) -> dict[str, AttackMetric]:
    """The attack-utility metrics of ``cfg.metric``, fed by the attack callback once per attack."""
    metrics = {name: instantiate(node) for name, node in (cfg or {}).items() if node is not None}
    for name, metric in metrics.items():
        if not isinstance(metric, AttackMetric):
            raise RobustlabError(
                f"metric {name!r} is a {type(metric).__name__}, not an attack-utility metric",
                "give metric= options from configs/metric (AttackMetric subclasses)",
            )
    return metrics


def make_loggers(cfg: DictConfig | None) -> list[Logger]:
    return [instantiate(node) for node in (cfg or {}).values() if node is not None]


@contextmanager
def logged_run(cfg: DictConfig) -> Iterator[list[Logger]]:
    """The run's loggers (``cfg.logger``), with the resolved config logged at the start (so a crashed run still
    has it) and every logger finished in a ``finally``: a run that raised is marked failed, never left open. The
    run directory is locked for the run's duration (:func:`run_lock`). With ``keep_freed_memory`` (default), freed
    CPU memory is kept for reuse (:func:`~robustlab.utils.keep_freed_memory`)."""
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    with run_lock(Path(cfg.paths.output_dir)), stop_on_signals():
        loggers = make_loggers(cfg.get("logger"))
        status = "failed"
        try:
            log_config(loggers, cfg)
            yield loggers
            status = "success"
        finally:
            finish(loggers, status)


class Stopped(BaseException):
    """Raised by :func:`stop_on_signals` in the middle of whatever runs, to unwind the task at once (a
    ``BaseException``, so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_GRACE_S = 15
_deferred: dict[str, int | None] = {"grace": None, "signum": None}


def defer_stops(grace: int | None) -> None:
    """From now on a SIGTERM or SIGINT is held for up to ``grace`` seconds (then raised as :class:`Stopped`
    anyway), so that training can end its batch and save its state; ``None``: raise at once again, dropping a
    held signal's deadline."""
    _deferred["grace"] = grace
    if grace is None:
        signal.alarm(0)


def held_stop() -> int | None:
    """The signal held since :func:`defer_stops`, if one came."""
    return _deferred["signum"]


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Stopped` at once, or after the current training batch
    while :func:`defer_stops` holds them. Lightning only notes a SIGTERM and stops at the next batch boundary,
    which for a long batch (PixelDefend purification, EOT attacks) can be many minutes away; its own handler
    still runs first (it forwards the signal to DDP workers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        if _deferred["grace"] is None:
            raise Stopped(signum)
        if _deferred["signum"] is None:
            _deferred["signum"] = signum
            signal.alarm(_deferred["grace"])

    def late(signum, frame):
        raise Stopped(_deferred["signum"] or signal.SIGTERM)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
    previous = {sig: signal.signal(sig, late if sig == signal.SIGALRM else stop) for sig in handled}
    try:
        yield
    finally:
        signal.alarm(0)
        _deferred.update(grace=None, signum=None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


LOCK_NAME = ".robustlab.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.robustlab.lock`` (this process's pid and host) for the block, so that a second run writing
    the same directory refuses with one line naming the holder, instead of interleaving its outputs. A lock whose
    process on this host is gone is stale and taken over. Processes that Lightning's DDP launcher started (a
    nonzero ``LOCAL_RANK`` or ``RANK``) work under their launcher's lock."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    lock, me = directory / LOCK_NAME, f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid, _, host = lock.read_text().partition(" ")
            if host.strip() == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                lock.unlink(missing_ok=True)
                continue
            raise RobustlabError(
                f"the run directory {directory} is in use by process {pid} on {host.strip() or 'an unknown host'} "
                f"(lock file {lock})",
                "wait for that run to finish, or give this one another hydra.run.dir",
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def make_trainer(cfg: DictConfig, loop: EvaluationLoop, loggers: list[Logger]) -> L.Trainer:
    if loop.attacks and cfg.trainer.get("inference_mode", True):
        raise RobustlabError(
            "attacks need gradients but the trainer runs evaluation under inference mode",
            "set trainer.inference_mode=false",
        )
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    return instantiate(
        cfg.trainer, callbacks=[*callbacks, loop], logger=loggers or False, default_root_dir=cfg.paths.output_dir
    )


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the resolved run config to every logger (at start, so a crashed run still has it)."""
    for logger in loggers:
        logger.log_hyperparams(plain(cfg))


def log_run_info(loggers: list[Logger], info: dict[str, Any]) -> None:
    """Record values known only at the end (e.g. the checkpoint path) in every logger."""
    for logger in loggers:
        logger.log_hyperparams(info)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(info)


def finish(loggers: list[Logger], status: str = "success") -> None:
    for logger in loggers:
        logger.finalize(status)
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=0 if status == "success" else 1)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON, atomically (a crash leaves the old file or none, never a truncated one)."""
    text = json.dumps(payload, indent=2) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def say(trainer: L.Trainer, message: str) -> None:
    if trainer.is_global_zero:
        print(message, file=sys.stdout, flush=True)
