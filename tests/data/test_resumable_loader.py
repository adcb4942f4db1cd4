"""The training loader resumes in the middle of an epoch: its order comes from (seed, epoch) alone, a loaded
state skips the batches done, and each example's augmentation draws from its own seed, whatever the global RNG
and the worker that loads it."""

import torch
from torch.utils.data import Dataset

from robustlab.data.base import EpochSampler, Indexed, ResumableLoader


class Noisy(Dataset):
    """Augmentation = noise from torch's global RNG."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((3,), float(i)) + torch.rand(3), i % 2


def loader(done=None, num_workers=0):
    data = Indexed(Noisy())
    sampler = EpochSampler(data, seed=7)
    return ResumableLoader(
        data, batch_size=4, sampler=sampler, drop_last=True, num_workers=num_workers, done=done,
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip


def batches(dl):
    return [(x, i) for x, _, i in dl]


def test_order_and_augmentation_depend_on_seed_and_epoch_only():
    torch.manual_seed(0)
    one = batches(loader())
    torch.manual_seed(1)
    two = batches(loader())
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    other = loader()
    other.sampler.set_epoch(1)
    assert not torch.equal(torch.cat([i for _, i in batches(other)]), torch.cat([i for _, i in one]))
    state = torch.get_rng_state()
    batches(loader())
    assert torch.equal(state, torch.get_rng_state())  # loading drew nothing from the global RNG


def test_a_loaded_state_continues_the_epoch_and_a_finished_epoch_moves_on():
    full = loader()
    full.sampler.set_epoch(2)
    epoch2 = batches(full)
    stopped = loader(done=lambda: 3)
    stopped.sampler.set_epoch(2)
    state = stopped.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == len(epoch2) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, epoch2[3:]))
    assert len(batches(resumed)) == len(epoch2)  # the skip is for one pass only
    finished = loader()
    finished.load_state_dict({"epoch": 2, "batches": len(epoch2)})
    assert finished.sampler.epoch == 3 and finished.sampler.skip == 0


def test_workers_load_the_same_augmentations():
    serial, parallel = batches(loader()), batches(loader(num_workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(serial, parallel))
