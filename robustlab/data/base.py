"""Shared datamodule logic: splits, indexed samples and exact (unpadded) evaluation sharding."""

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from robustlab.errors import RobustlabError


class Indexed(Dataset):
    """Yield ``(x, y, i)``: ``i`` is the sample's index in its split, used for exact counting
    and for per-example attack seeds that do not depend on batching or process count. Asked for
    ``(i, seed)`` (by :class:`EpochSampler`), the sample's augmentation draws from ``seed`` alone."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]):
        if isinstance(key, tuple):
            i, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x, y = self.dataset[i]
        else:
            i = key
            x, y = self.dataset[i]
        return x, int(y), i


class EpochSampler(DistributedSampler):
    """The training order: each epoch a permutation drawn from ``(seed, epoch)`` alone (Lightning calls
    ``set_epoch``), this process's share of it under DDP, and per example the seed of its augmentation. Nothing
    is drawn from the global RNG, so a run resumed in the middle of an epoch continues with the batches, and
    the augmentations, of an uninterrupted one. ``skip`` examples are left out of the next pass (resuming)."""

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self):
        order = list(super().__iter__())[self.skip :]
        self.skip = 0
        draws = torch.Generator().manual_seed(self.seed + self.epoch + 0x9E3779B9)
        seeds = torch.randint(2**62, (len(self.dataset),), generator=draws).tolist()
        return iter([(i, seeds[i]) for i in order])


class ResumableLoader(DataLoader):
    """The training loader, whose ``state_dict`` (the epoch and the batches it finished, from ``done``) Lightning
    keeps in every checkpoint; loaded, the next pass starts where that epoch stopped, or at the next epoch's start
    if it had finished."""

    def __init__(self, *args, done=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.done = done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": int(self.done()) if self.done else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip = batches * self.batch_size


def class_tail_split(labels: np.ndarray, n: int, split: str) -> np.ndarray:
    """Indices of ``split``: "test" is the last ``n`` samples of every class, interleaved by class
    (c0, c1, ..., c0, c1, ...) so that every prefix (``test_size``) is class-balanced; any other
    split is the remaining samples, in the order given."""
    test = np.stack([np.flatnonzero(labels == c)[-n:] for c in np.unique(labels)], 1).reshape(-1)
    return test if split == "test" else np.setdiff1d(np.arange(len(labels)), test)


class ImageDataModule(L.LightningDataModule):
    """Base datamodule. Subclasses set the class attributes and implement :meth:`load`.

    The validation set is ``val_size`` samples drawn (seeded) from the training split.
    ``train_size`` and ``test_size`` keep the first samples of those splits, for quick runs.
    Under DDP the evaluation loaders shard without padding, so every test sample is counted
    exactly once. ``family`` and ``threat`` (the data config's family and threat-model budgets, see
    :mod:`robustlab.resolvers`) are kept for the record.
    """

    name: str = ""
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        val_size: int = 500,
        train_size: int | None = None,
        test_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = False,
        family: str | None = None,
        threat: dict | None = None,
    ):
        super().__init__()
        for key, value in (("train_size", train_size), ("test_size", test_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise RobustlabError(
                    f"data.{key} must be a positive number of images, got {value!r}",
                    f"set data.{key}=N with N >= 1, or data.{key}=null for the whole split",
                )
        self.family, self.threat = family, dict(threat or {})
        self.root, self.batch_size = root, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size, self.train_size, self.test_size = val_size, train_size, test_size
        self.num_workers, self.seed, self.download = num_workers, seed, download
        self.train_set = self.val_set = self.test_set = None

    def load(self, split: str) -> Dataset:
        """``(x, y)`` pairs in [0,1] for ``split``: "train" (the training pool, augmented if the
        dataset augments), "val" (the same pool, unaugmented) or "test"."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        pool = self.load("train")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed)).tolist()
        train_idx = order[self.val_size :]
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        self.train_set = Indexed(Subset(pool, train_idx))
        self.val_set = Indexed(Subset(self.load("val"), order[: self.val_size]))
        test = self.load("test")
        if len(test) == 0:
            raise RobustlabError(f"{self.describe()} has an empty test split", "point the data config at images")
        if self.test_size is not None:
            test = Subset(test, range(min(self.test_size, len(test))))
        self.test_set = Indexed(test)

    def unaugmented_train_set(self) -> Dataset:
        """The training split without augmentation, as ``(x, y, i)`` (``i``: the position in the split)."""
        if self.train_set is None:
            self.setup("fit")
        inner = self.train_set.dataset
        return Indexed(Subset(self.load("val"), inner.indices)) if isinstance(inner, Subset) else self.train_set

    def train_dataloader(self) -> DataLoader:
        """Shuffled by :class:`EpochSampler` from the run's seed (``seed_everything``), resumable mid-epoch."""
        trainer, seed = self.trainer, torch.initial_seed() % 2**62
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        done = (lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed) if trainer else None
        return ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=EpochSampler(self.train_set, seed, world, rank),
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
            done=done,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def describe(self) -> str:
        return f"{self.name} ({self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes)"


class TensorPairs(Dataset):
    """``(x, y)`` pairs from two tensors, with an optional per-sample transform."""

    def __init__(self, x: torch.Tensor, y: Sequence[int] | torch.Tensor, transform=None):
        self.x, self.y, self.transform = x, torch.as_tensor(y), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i]
        return (self.transform(x) if self.transform else x), self.y[i]
