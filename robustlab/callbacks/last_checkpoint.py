"""``checkpoints/last.ckpt`` after every training epoch, the point ``train.py resume=`` continues from."""

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` at the end of every training epoch (after its
    validation) when it keeps no top-k checkpoints, where Lightning writes ``last.ckpt`` only next to one of those.
    Written through Lightning's fsspec transaction: a crash leaves the previous epoch's file."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
