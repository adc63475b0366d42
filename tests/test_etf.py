"""nclt.geometry: simplex ETF construction."""

from __future__ import annotations

import math

import pytest
import torch

from nclt.errors import ConfigError
from nclt.geometry import etf_angle, etf_cosine, etf_gram, simplex_etf


def _check_etf(m: torch.Tensor, k: int, atol: float) -> None:
    gram = m.T @ m
    assert gram.shape == (k, k)
    torch.testing.assert_close(
        torch.diagonal(gram), torch.ones(k, dtype=m.dtype), atol=atol, rtol=0
    )
    off = gram[~torch.eye(k, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1.0 / (k - 1)), atol=atol, rtol=0)
    torch.testing.assert_close(
        m.sum(dim=1), torch.zeros(m.shape[0], dtype=m.dtype), atol=atol, rtol=0
    )


@pytest.mark.parametrize(("dim", "k"), [(2, 2), (3, 3), (10, 10), (64, 10), (128, 100), (7, 3)])
def test_simplex_etf_properties(dim: int, k: int) -> None:
    m = simplex_etf(dim, k, dtype=torch.float64)
    assert m.shape == (dim, k)
    _check_etf(m, k, atol=1e-12)
    torch.testing.assert_close(m.T @ m, etf_gram(k), atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 10, 100])
@pytest.mark.parametrize("rotate", [True, False])
def test_dim_k_minus_one_is_exact(k: int, rotate: bool) -> None:
    m = simplex_etf(k - 1, k, dtype=torch.float64, rotate=rotate)
    assert m.shape == (k - 1, k)
    _check_etf(m, k, atol=1e-13)
    # rank K-1: the vertices span the whole space
    assert torch.linalg.matrix_rank(m) == k - 1


def test_float32_default_and_unrotated_layout() -> None:
    m = simplex_etf(64, 10)
    assert m.dtype == torch.float32
    _check_etf(m.double(), 10, atol=1e-6)
    flat = simplex_etf(16, 10, rotate=False, dtype=torch.float64)
    assert torch.all(flat[10:] == 0)  # INC's layout: the simplex in the first K coordinates


def test_too_narrow_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"at least K-1 = 99.*wider model"):
        simplex_etf(64, 100)
    with pytest.raises(ConfigError):
        simplex_etf(4, 1)


def test_seeded_determinism() -> None:
    state = torch.random.get_rng_state()
    a = simplex_etf(32, 10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a, simplex_etf(32, 10, seed=3))
    assert not torch.allclose(a, simplex_etf(32, 10, seed=4))
    assert torch.equal(simplex_etf(9, 10, seed=1), simplex_etf(9, 10, seed=1))


def test_angle_helpers() -> None:
    assert etf_cosine(10) == pytest.approx(-1 / 9)
    assert etf_angle(10) == pytest.approx(math.acos(-1 / 9))
    assert math.degrees(etf_angle(10)) == pytest.approx(96.38, abs=0.01)
    assert etf_angle(2) == pytest.approx(math.pi)
