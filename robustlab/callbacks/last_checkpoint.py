"""``checkpoints/last.ckpt`` after every training epoch and when a stop signal comes in the middle of one, the
point ``train.py resume=`` continues from."""

import signal

from lightning.pytorch.callbacks import ModelCheckpoint

from robustlab.tasks import STOP_GRACE_S, Stopped, defer_stops, held_stop, say


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` at the end of every training epoch (after its
    validation) when it keeps no top-k checkpoints, where Lightning writes ``last.ckpt`` only next to one of those.
    While training batches run, SIGTERM and SIGINT are held until the batch ends (at most ``STOP_GRACE_S``
    seconds): then ``last.ckpt`` is written at that batch, which the resumable training loader
    (:class:`robustlab.data.base.ResumableLoader`) continues from, and the run stops. Written through Lightning's
    fsspec transaction: a crash leaves the previous file."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        defer_stops(STOP_GRACE_S if self.save_last else None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        signum = held_stop()
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(signum is not None, all=False):
            signum = signum or signal.SIGTERM  # another process got it: all stop at this batch
        if signum is not None:
            defer_stops(None)
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            say(trainer, f"saved {self.last_model_path} at batch {batch_idx + 1} of epoch {trainer.current_epoch}")
            raise Stopped(signum)
        if batch_idx + 1 >= trainer.num_training_batches:
            defer_stops(None)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer, pl_module, exception) -> None:
        defer_stops(None)
