"""Simplex equiangular tight frames (ETF), the geometry neural collapse converges to.

A simplex ETF of ``K`` classes in ``R^dim`` is (AllNC Eq. 1, ARB Eq. 5; DisA Eq. 1 misprints
``1/(K-1)`` for ``1/K``, see ERRATA)::

    M = sqrt(K / (K - 1)) U (I_K - 1 1^T / K),    U^T U = I_K  (U is dim x K)

Its columns are unit vectors, every pair has cosine exactly ``-1/(K-1)`` and they sum to zero.
It exists whenever ``dim >= K - 1``: for ``dim >= K`` ``U`` is a seeded random partial rotation;
for ``dim == K - 1`` ``U (I - 11^T/K)`` is replaced by an orthonormal basis of the sum-zero
subspace (the same Gram matrix, one dimension fewer).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nclt.errors import ConfigError

__all__ = ["etf_angle", "etf_cosine", "etf_gram", "simplex_etf"]


def etf_cosine(num_classes: int) -> float:
    """Pairwise cosine of a simplex ETF of ``num_classes`` vertices: ``-1/(K-1)``."""
    _check_classes(num_classes)
    return -1.0 / (num_classes - 1)


def etf_angle(num_classes: int) -> float:
    """Pairwise angle (radians) of a simplex ETF: ``arccos(-1/(K-1))`` (1.682 rad at K=10)."""
    return math.acos(etf_cosine(num_classes))


def etf_gram(num_classes: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Gram matrix ``(K, K)`` of a unit simplex ETF: ``K/(K-1) I - 1/(K-1) 11^T``."""
    _check_classes(num_classes)
    k = num_classes
    eye = torch.eye(k, dtype=dtype)
    return k / (k - 1) * eye - 1.0 / (k - 1)


def simplex_etf(
    dim: int,
    num_classes: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    rotate: bool = True,
) -> Tensor:
    """A simplex ETF with ``num_classes`` unit columns in ``R^dim``.

    Args:
        dim: feature dimension ``D``; must be at least ``K - 1``.
        num_classes: number of vertices ``K`` (at least 2).
        seed: seed of the random rotation (a private generator: the global RNG is untouched);
            the same ``(dim, num_classes, seed)`` always gives the same matrix.
        dtype: dtype of the result (computed in float64, then cast).
        rotate: ``False`` puts the simplex in the first coordinates without a rotation
            (INC's official fixed-ETF head: the first ``K`` coordinates when ``dim >= K``; a
            Helmert basis of the sum-zero subspace when ``dim == K - 1``).

    Returns:
        ``M`` of shape ``(dim, K)``: unit columns, pairwise cosines ``-1/(K-1)``, columns
        summing to zero. A fixed ETF classifier uses ``M.T`` (``(K, D)``) as its weight.

    Raises:
        ConfigError: ``dim < K - 1`` (no K-vertex simplex fits), or ``K < 2``.

    For ``dim >= K``, ``U`` is the Q factor of a seeded Gaussian ``dim x K`` matrix with its
    column signs fixed by ``sign(diag(R))`` (so the result does not depend on the LAPACK
    build); for ``dim == K - 1`` it is an orthonormal basis of ``{x : sum(x) = 0}`` (Helmert),
    rotated by a seeded ``(K-1) x (K-1)`` orthogonal matrix when ``rotate``.
    """
    _check_classes(num_classes)
    k = num_classes
    if dim < k - 1:
        raise ConfigError(
            f"a simplex ETF of {k} classes needs feature dimension at least K-1 = {k - 1}, "
            f"got {dim}; use a wider model (e.g. the CIFAR ResNet width option) or a "
            f"projection to >= {k - 1} dimensions"
        )
    gen = torch.Generator().manual_seed(int(seed))
    if dim >= k:
        u = _seeded_orthonormal(dim, k, gen) if rotate else torch.eye(dim, k, dtype=torch.float64)
        centering = torch.eye(k, dtype=torch.float64) - 1.0 / k
        m = math.sqrt(k / (k - 1)) * u @ centering
    else:  # dim == k - 1: sum-zero basis, exact up to rounding
        basis = _helmert_rows(k)  # (k-1, k): orthonormal rows orthogonal to 1
        if rotate:
            basis = _seeded_orthonormal(k - 1, k - 1, gen) @ basis
        m = math.sqrt(k / (k - 1)) * basis
    return m.to(dtype)


def _check_classes(num_classes: int) -> None:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(f"a simplex ETF needs at least 2 classes, got {num_classes!r}")


def _seeded_orthonormal(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """``(rows, cols)`` float64 matrix with orthonormal columns, deterministic given ``gen``."""
    gauss = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def _helmert_rows(k: int) -> Tensor:
    """Rows ``i = 1..k-1``: ``(1, ..., 1, -i, 0, ..., 0) / sqrt(i (i+1))`` (i ones)."""
    i = torch.arange(1, k, dtype=torch.float64)[:, None]  # (k-1, 1)
    cols = torch.arange(k, dtype=torch.float64)[None, :]  # (1, k)
    h = (cols < i).to(torch.float64) - i * (cols == i).to(torch.float64)
    return h / torch.sqrt(i * (i + 1))
