"""The training-time profiler that stores the neuron bounds coverage needs with the run
(``checkpoints/last.coverage.pt``)."""

from collections.abc import Mapping
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from robustlab.evaluation.coverage import chosen_layers, profile_training_split
from robustlab.evaluation.loop import classifier
from robustlab.metrics.coverage import NeuronProfile, profile_path


class CoverageProfiler(L.Callback):
    """After training, profile ``[low, high]`` of every neuron of ``layers`` (``{types, names}``; default
    Conv2d and Linear) over the whole, unaugmented training split and save it next to the last checkpoint
    (``checkpoints/last.ckpt`` -> ``checkpoints/last.coverage.pt``; ``<run dir>/coverage_profile.pt``
    without a ModelCheckpoint). The coverage evaluation finds it there."""

    def __init__(self, layers: Mapping | None = None, batch_size: int = 256):
        super().__init__()
        self.layers, self.batch_size = layers, batch_size
        self.profile: NeuronProfile | None = None
        self.path: Path | None = None

    def on_train_end(self, trainer, pl_module):
        model = classifier(pl_module)
        self.profile = profile_training_split(trainer, model, chosen_layers(model, self.layers), self.batch_size)

    def on_fit_end(self, trainer, pl_module):
        """Saved here: ModelCheckpoint may write ``last.ckpt`` in its own ``on_train_end``, after ours."""
        if self.profile is None:
            return
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        last = checkpoint.last_model_path if checkpoint is not None else ""
        self.path = profile_path(last) if last else Path(trainer.default_root_dir) / "coverage_profile.pt"
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.profile.save(self.path)
