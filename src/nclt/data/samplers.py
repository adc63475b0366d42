"""Re-sampling (class-aware samplers) and re-weighting (per-class loss weights).

Samplers draw an epoch from ``seed + epoch`` alone, like ``DistributedSampler``: call
``set_epoch(epoch)`` before each epoch. With ``num_replicas > 1`` every rank computes the same
global draw and keeps the positions ``rank, rank + R, rank + 2R, ...``, so the ranks' shares
are disjoint and together they are exactly the one-process epoch.

Kinds for :func:`build_sampler`:

* ``instance``: every image once per epoch in a random order (plain shuffle).
* ``class_balanced``: re-sampling (RS; the cRT stage of Kang et al. 2020): pick a class
  uniformly, then an image of it uniformly, with replacement.
* ``sqrt``: class probability proportional to ``sqrt(n_c)`` (square-root sampling).
* ``power``: class probability proportional to ``n_c ** q`` (``q=0`` class-balanced,
  ``q=0.5`` sqrt, ``q=1`` instance-balanced but with replacement).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from nclt import dist
from nclt.errors import ConfigError, closest

SAMPLER_KINDS = ("instance", "class_balanced", "sqrt", "power")


def _as_long(targets: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    if isinstance(targets, Tensor):
        return targets.detach().to("cpu", torch.long).reshape(-1)
    return torch.as_tensor(np.asarray(targets, dtype=np.int64)).reshape(-1)


class _EpochSampler(Sampler[int]):
    """Shared machinery: seed + epoch -> global draw -> this rank's share."""

    def __init__(
        self,
        num_items: int,
        num_samples: int | None,
        seed: int,
        num_replicas: int | None,
        rank: int | None,
    ) -> None:
        self.num_replicas = dist.world_size() if num_replicas is None else int(num_replicas)
        self.rank = dist.rank() if rank is None else int(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"rank {self.rank} is not in 0..{self.num_replicas - 1}")
        total = num_items if num_samples is None else int(num_samples)
        if total < 1:
            raise ConfigError(f"a sampler needs at least one sample per epoch, got {total}")
        # Round up so every rank gets the same number of samples (DistributedSampler's rule).
        self.num_samples = -(-total // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw ``__iter__`` returns."""
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return g

    def global_draw(self) -> Tensor:
        """The whole epoch's indices over all ranks, ``(total_size,)`` long."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        share = self.global_draw()[self.rank : self.total_size : self.num_replicas]
        return iter(share.tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShuffleSampler(_EpochSampler):
    """Instance-balanced sampling: a permutation of the dataset per epoch.

    With several replicas the permutation is padded with its own first indices up to a
    multiple of ``num_replicas`` (as ``DistributedSampler`` with ``drop_last=False``); use it
    for training only, since evaluation shards must not repeat images.
    """

    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(num_items, None, seed, num_replicas, rank)
        self.num_items = int(num_items)

    def global_draw(self) -> Tensor:
        perm = torch.randperm(self.num_items, generator=self._generator())
        pad = self.total_size - self.num_items
        if pad > 0:
            perm = torch.cat([perm, perm.repeat(-(-pad // self.num_items))[:pad]])
        return perm


class ClassAwareSampler(_EpochSampler):
    """Draw a class from ``class_probs``, then an image of that class uniformly, with replacement.

    Args:
        targets: label per image, ``(N,)``.
        class_probs: ``(C,)`` non-negative, normalised here; a class with no image must have 0.
        num_samples: draws per epoch over all ranks (default ``N``, the dataset length).
        seed: base seed; the epoch's draw depends on ``seed + epoch`` only.
        num_replicas, rank: distributed share (default: from ``nclt.dist``).
    """

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray | Tensor,
        class_probs: Sequence[float] | np.ndarray | Tensor,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        labels = _as_long(targets)
        super().__init__(len(labels), num_samples, seed, num_replicas, rank)
        probs = torch.as_tensor(np.asarray(class_probs, dtype=np.float64))
        counts = torch.bincount(labels, minlength=len(probs)) if len(labels) else labels
        if len(counts) != len(probs):
            raise ConfigError(f"labels reach {len(counts) - 1} but class_probs has {len(probs)}")
        if (probs < 0).any() or not torch.isfinite(probs).all() or probs.sum() <= 0:
            raise ConfigError("class_probs must be finite, non-negative, with a positive sum")
        if ((counts == 0) & (probs > 0)).any():
            empty = torch.nonzero((counts == 0) & (probs > 0)).view(-1).tolist()
            raise ConfigError(f"classes {empty} have no image but a positive probability")
        self.class_probs = probs / probs.sum()
        self.class_counts = counts
        # Indices sorted by class: class c occupies order[start[c] : start[c] + counts[c]].
        self._order = torch.argsort(labels, stable=True)
        self._start = torch.cumsum(counts, 0) - counts

    def global_draw(self) -> Tensor:
        g = self._generator()
        classes = torch.multinomial(
            self.class_probs, self.total_size, replacement=True, generator=g
        )
        u = torch.rand(self.total_size, generator=g, dtype=torch.float64)
        n = self.class_counts[classes]
        within = torch.minimum((u * n).long(), n - 1)
        return self._order[self._start[classes] + within]


def power_probs(class_counts: Sequence[int] | np.ndarray | Tensor, q: float) -> Tensor:
    """Class probabilities ``n_c ** q / sum_k n_k ** q`` (0 for an empty class), float64 (C,)."""
    n = torch.as_tensor(np.asarray(class_counts, dtype=np.float64))
    p = torch.where(n > 0, n.clamp(min=1e-300) ** q, torch.zeros_like(n))
    return p / p.sum()


def build_sampler(
    kind: str | None,
    targets: Sequence[int] | np.ndarray | Tensor,
    num_samples: int | None = None,
    seed: int = 0,
    *,
    q: float | None = None,
    num_classes: int | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> ShuffleSampler | ClassAwareSampler:
    """Build a training sampler (see the module docstring for the kinds).

    Args:
        kind: ``instance`` (or None), ``class_balanced``, ``sqrt`` or ``power``.
        targets: label per image of the training set, ``(N,)``.
        num_samples: draws per epoch over all ranks (class-aware kinds; default ``N``).
        seed: base seed; call ``set_epoch`` each epoch.
        q: exponent of ``power`` (required for it).
        num_classes: number of classes (default: largest label + 1).
        num_replicas, rank: distributed share (default: from ``nclt.dist``).

    Returns:
        A sampler with ``set_epoch``; pass it to ``DataLoader(sampler=...)`` without shuffle.
    """
    kind = "instance" if kind is None else kind
    if kind not in SAMPLER_KINDS:
        raise ConfigError(
            f"unknown sampler {kind!r}.{closest(kind, SAMPLER_KINDS)} "
            f"Known: {', '.join(SAMPLER_KINDS)}"
        )
    labels = _as_long(targets)
    if kind == "instance":
        if num_samples is not None and num_samples != len(labels):
            raise ConfigError("the instance sampler draws each image once; drop num_samples")
        return ShuffleSampler(len(labels), seed, num_replicas, rank)
    if kind == "power":
        if q is None:
            raise ConfigError("the power sampler needs q (class probability ~ n_c ** q)")
        exponent = float(q)
    else:
        if q is not None:
            raise ConfigError(f"q is for the power sampler, not {kind!r}")
        exponent = 0.0 if kind == "class_balanced" else 0.5
    K = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = torch.bincount(labels, minlength=K)
    return ClassAwareSampler(
        labels, power_probs(counts, exponent), num_samples, seed, num_replicas, rank
    )
