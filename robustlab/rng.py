"""Per-example random streams computed with tensor operations on the input's device.

Each example's stream is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014) started from the SplitMix64 mix of the example's seed: its ``i``-th 64-bit output is
``mix64(mix64(seed) + (i + 1) * GAMMA)``. An output depends only on the seed and ``i`` (a counter-based
generator), so a batch's draws are the same whatever the batch size, order, process count or device, and a whole
batch is drawn in a few elementwise integer operations instead of one CPU generator per example. Arithmetic is
on int64 tensors, which wrap modulo 2**64 as the algorithm's unsigned arithmetic does.

Each 64-bit output gives two float32 uniforms in ``[0, 1)`` (the top 24 bits of its high and of its low 32-bit
half, the resolution ``torch.rand`` gives float32), or two standard normals (Box-Muller on that pair), in stream
order: a draw of ``m`` values uses ``ceil(m / 2)`` outputs, so draws of even sizes concatenate to one long draw.
"""

import math

import torch

_MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _signed(c: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _xorshift(z: torch.Tensor, s: int) -> torch.Tensor:
    """``z ^ (z >> s)`` with a logical shift, in place."""
    return z.bitwise_xor_(z.bitwise_right_shift(s).bitwise_and_((1 << (64 - s)) - 1))


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function (Stafford's Mix13) of int64 ``z``, in place."""
    _xorshift(z, 30).mul_(_signed(_MIX[0]))
    _xorshift(z, 27).mul_(_signed(_MIX[1]))
    return _xorshift(z, 31)


def keys(seeds: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Each example's stream key, ``mix64(seed ^ mix64(salt))``, int64 on ``seeds``' device: a salt gives every
    seed another stream (``mix64(0) = 0``, so salt 0 leaves the seed as it is)."""
    z = seeds.to(torch.int64).clone()
    if salt:
        z.bitwise_xor_(int(mix64(torch.tensor([_signed(salt & _MASK)]))))
    return mix64(z)


def bits(key: torch.Tensor, start: torch.Tensor, count: int) -> torch.Tensor:
    """Outputs ``start .. start + count - 1`` of each stream, ``(B, count)`` int64."""
    z = torch.arange(1, count + 1, device=key.device, dtype=torch.int64).expand(len(key), count)
    z = (z + start[:, None]).mul_(_signed(GAMMA)).add_(key[:, None])
    return mix64(z)


def _halves(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The high and low 32-bit halves of ``z`` as float32 uniforms in [0, 1) (their top 24 bits)."""
    scale = 2.0**-24
    high = z.bitwise_right_shift(40).bitwise_and_((1 << 24) - 1).to(torch.float32).mul_(scale)
    low = z.bitwise_right_shift(8).bitwise_and_((1 << 24) - 1).to(torch.float32).mul_(scale)
    return high, low


class Streams:
    """One counter-based stream per example: ``keys`` and, per example, how many outputs it has used, so
    successive draws continue each stream. Draws for a subset of examples (``rows``, indices) advance only theirs.
    Without seeds, ``n`` examples draw from torch's global generator on ``device`` instead."""

    def __init__(self, seeds: torch.Tensor | None, n: int | None = None, device=None, salt: int = 0):
        self.device = torch.device(device) if device is not None else getattr(seeds, "device", torch.device("cpu"))
        self.keys = None if seeds is None else keys(seeds.to(self.device), salt)
        self.used = None if seeds is None else torch.zeros_like(self.keys)
        self.n = len(seeds) if seeds is not None else int(n)

    def __len__(self) -> int:
        return self.n

    def keep(self, mask: torch.Tensor) -> "Streams":
        """Only the streams of ``mask``'s examples (a bool mask or indices), in place."""
        self.n = int(mask.sum()) if mask.dtype == torch.bool else len(mask)
        if self.keys is not None:
            self.keys, self.used = self.keys[mask], self.used[mask]
        return self

    def _bits(self, count: int, rows: torch.Tensor | None) -> torch.Tensor:
        key, used = (self.keys, self.used) if rows is None else (self.keys[rows], self.used[rows])
        z = bits(key, used, count)
        if rows is None:
            self.used += count
        else:
            self.used[rows] += count
        return z

    def uniform(self, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, *shape)`` float32 uniforms in [0, 1)."""
        if self.keys is None:
            return torch.rand(self.n if rows is None else len(rows), *shape, device=self.device)
        m = math.prod(shape)
        high, low = _halves(self._bits((m + 1) // 2, rows))
        return torch.stack([high, low], 2).view(len(high), -1)[:, :m].reshape(len(high), *shape)

    def normal(self, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, *shape)`` float32 standard normals (Box-Muller, both of each pair's outputs)."""
        if self.keys is None:
            return torch.randn(self.n if rows is None else len(rows), *shape, device=self.device)
        m = math.prod(shape)
        high, low = _halves(self._bits((m + 1) // 2, rows))
        radius = high.neg_().log1p_().mul_(-2).sqrt_()
        angle = low.mul_(2 * math.pi)
        pairs = torch.stack([radius * angle.cos(), radius.mul_(angle.sin_())], 2)
        return pairs.view(len(pairs), -1)[:, :m].reshape(len(pairs), *shape)

    def rademacher(self, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, *shape)`` float32 signs, +1 or -1 with probability 1/2 each."""
        return torch.where(self.uniform(*shape, rows=rows) < 0.5, -1.0, 1.0)

    def randint(self, high: int | torch.Tensor, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, *shape)`` int64 uniform in ``[0, high)`` (``high`` an int, or a tensor broadcasting against the
        draw)."""
        u = self.uniform(*shape, rows=rows).double()
        return (u * torch.as_tensor(high, device=u.device)).long()

    def draw(self, kind: str, shape: tuple[int, ...], like: torch.Tensor, rows=None) -> torch.Tensor:
        """``uniform``, ``normal`` or ``rademacher`` noise of ``(B, *shape)`` on ``like``'s device and dtype."""
        return getattr(self, kind)(*shape, rows=rows).to(device=like.device, dtype=like.dtype)
