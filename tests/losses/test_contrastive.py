"""Contrastive losses (SupCon, BCL, HyCon), and the global-batch (DDP) contract of every
batch-statistics loss of this family and of the regularizers / geometry losses."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.autograd import gradcheck

from nclt.errors import ConfigError
from nclt.geometry import simplex_etf
from nclt.losses import LOSSES
from nclt.losses.contrastive import BCLLoss, HyConLoss, SupConLoss

D64 = torch.float64


def views_of(labels: torch.Tensor, v: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), v, d, generator=g, dtype=D64)


def collapsed_views(counts: list[int], v: int = 2, dim: int = 8):
    k = len(counts)
    etf = simplex_etf(dim, k, dtype=D64).T
    labels = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
    proj = etf[labels][:, None, :].expand(-1, v, -1).clone()
    return proj, labels, etf


# ---- slow references from the formulas -----------------------------------------------------


def slow_contrastive(proj, labels, tau, form="supcon", prototypes=None):
    """Per-anchor losses (B*V,), sample-major; forms: supcon, l1 (Eq. 6 / 9), l2 (Eq. 7)."""
    b, v, _ = proj.shape
    z = [F.normalize(proj[i, a], dim=0) for i in range(b) for a in range(v)]
    y = [int(labels[i]) for i in range(b) for _ in range(v)]
    if prototypes is not None:
        z = z + [F.normalize(p, dim=0) for p in prototypes]
        y = y + list(range(len(prototypes)))
    out = []
    for i in range(b * v):
        others = [k for k in range(len(z)) if k != i]
        s = {k: float(z[i] @ z[k]) / tau for k in others}
        pos = [k for k in others if y[k] == y[i]]
        if not pos:
            out.append(0.0)
            continue
        classes = sorted({y[k] for k in others})
        if form == "supcon":
            den = sum(math.exp(s[k]) for k in others)
            log_den = math.log(den)
        elif form == "l1":
            den = 0.0
            for c in classes:
                members = [k for k in others if y[k] == c]
                den += sum(math.exp(s[k]) for k in members) / len(members)
            log_den = math.log(den)
        else:  # l2
            den = 0.0
            for c in classes:
                members = [k for k in others if y[k] == c]
                den += math.exp(sum(s[k] for k in members) / len(members))
            log_den = math.log(den)
        out.append(-sum(s[p] - log_den for p in pos) / len(pos))
    return torch.tensor(out, dtype=D64)


def slow_hycon(pred, proj, labels):
    b, v, _ = proj.shape
    total = 0.0
    for i in range(b):
        same = [j for j in range(b) if labels[j] == labels[i]]
        for bv in range(v):
            z = proj[i, bv] / proj[i, bv].norm()
            u = sum(proj[j, bv] for j in same) / len(same)
            for a in range(v):
                if a != bv:
                    total += -float(pred[i, a] @ z / pred[i, a].norm()) / (v - 1)
            total += -float(u @ z / u.norm())
    return total / b


# ---- SupCon --------------------------------------------------------------------------------


def test_supcon_matches_slow_loop() -> None:
    labels = torch.tensor([0, 1, 1, 2, 0, 0, 3])
    proj = views_of(labels, 2, 5)
    loss = SupConLoss(temperature=0.3, reduction="none")(proj, labels)
    assert loss.shape == (7, 2)
    torch.testing.assert_close(loss.reshape(-1), slow_contrastive(proj, labels, 0.3))
    mean = SupConLoss(temperature=0.3)(proj, labels)
    assert mean.item() == pytest.approx(loss.mean().item(), rel=1e-12)
    # SimCLR: labels None = one class per sample
    simclr = SupConLoss(temperature=0.5)(proj)
    ref = slow_contrastive(proj, torch.arange(7), 0.5).mean()
    assert simclr.item() == pytest.approx(ref.item(), rel=1e-12)


def test_supcon_single_view_singleton_left_out() -> None:
    labels = torch.tensor([0, 0, 1])  # class 1 has no positive with one view
    proj = views_of(labels, 1, 4)
    per = SupConLoss(reduction="none")(proj, labels)
    assert per[2, 0].item() == 0.0
    assert SupConLoss()(proj, labels).item() == pytest.approx(per[:2].mean().item(), rel=1e-12)


# ---- BCL ------------------------------------------------------------------------------------


def test_bcl_collapsed_simplex_is_class_independent_but_supcon_is_not() -> None:
    counts = [6, 3, 2, 1, 1]  # imbalanced, every class present
    k = len(counts)
    proj, labels, etf = collapsed_views(counts)
    want = math.log(1 + (k - 1) * math.exp(-k / (k - 1)))
    per = BCLLoss(k, temperature=1.0, reduction="none")(proj, labels, etf)
    torch.testing.assert_close(per, torch.full_like(per, want), atol=1e-12, rtol=0)
    sup = SupConLoss(temperature=1.0, reduction="none")(proj, labels)
    head, tail = sup[labels == 0].mean().item(), sup[labels == 4].mean().item()
    assert abs(head - tail) > 0.1  # SupCon treats head and tail anchors differently
    # any temperature: log(1 + (K-1) exp(-K / ((K-1) tau)))
    per = BCLLoss(k, temperature=0.1, reduction="none")(proj, labels, etf)
    want = math.log1p((k - 1) * math.exp(-k / ((k - 1) * 0.1)))
    torch.testing.assert_close(per, torch.full_like(per, want), atol=1e-12, rtol=0)


def test_bcl_class_complement_with_absent_classes() -> None:
    proj, labels, etf = collapsed_views([4, 0, 1, 0, 2])  # classes 1 and 3 absent
    per = BCLLoss(5, temperature=1.0, reduction="none")(proj, labels, etf)
    want = math.log(1 + 4 * math.exp(-5 / 4))
    torch.testing.assert_close(per, torch.full_like(per, want), atol=1e-12, rtol=0)


@pytest.mark.parametrize("variant", ["bcl", "l2"])
@pytest.mark.parametrize("with_prototypes", [True, False])
def test_bcl_matches_slow_loop(variant: str, with_prototypes: bool) -> None:
    labels = torch.tensor([0, 1, 1, 2, 0, 0, 3])
    proj = views_of(labels, 2, 5, seed=1)
    protos = torch.randn(5, 5, dtype=D64) if with_prototypes else None
    loss = BCLLoss(5, temperature=0.2, variant=variant, reduction="none")(proj, labels, protos)
    form = "l1" if variant == "bcl" else "l2"
    want = slow_contrastive(proj, labels, 0.2, form, protos)
    torch.testing.assert_close(loss.reshape(-1), want)
    if not with_prototypes and variant == "bcl":
        eq6 = BCLLoss(5, temperature=0.2, variant="l1", reduction="none")(proj, labels)
        torch.testing.assert_close(eq6.reshape(-1), want)


def test_bcl_l3_and_ablation_switches() -> None:
    labels = torch.tensor([0, 1, 1, 2])
    proj = views_of(labels, 2, 5, seed=2)
    protos = torch.randn(3, 5, dtype=D64)
    l3 = BCLLoss(3, temperature=0.5, variant="l3", reduction="none")(proj, labels, protos)
    z = F.normalize(proj, dim=2)
    c = F.normalize(protos, dim=1)
    want = [
        -F.log_softmax(z[i, a] @ c.T / 0.5, dim=0)[labels[i]].item()
        for i in range(4)
        for a in range(2)
    ]
    torch.testing.assert_close(l3.reshape(-1), torch.tensor(want, dtype=D64))
    # no class-averaging, no prototypes: exactly SupCon
    plain = BCLLoss(3, temperature=0.5, class_averaging=False)(proj, labels)
    assert plain.item() == pytest.approx(SupConLoss(0.5)(proj, labels).item(), rel=1e-12)
    # class-complement only = SupCon over batch + prototypes
    comp = BCLLoss(3, temperature=0.5, class_averaging=False, reduction="none")(
        proj, labels, protos
    )
    torch.testing.assert_close(
        comp.reshape(-1), slow_contrastive(proj, labels, 0.5, prototypes=protos)
    )
    with pytest.raises(ConfigError, match=r"Eq\. 6"):
        BCLLoss(3, variant="l1")(proj, labels, protos)
    with pytest.raises(ConfigError, match="needs prototypes"):
        BCLLoss(3, variant="l3")(proj, labels)


# ---- HyCon ----------------------------------------------------------------------------------


def test_hycon_matches_paper_formula() -> None:
    labels = torch.tensor([0, 1, 1, 2, 0, 0])
    pred, proj = views_of(labels, 2, 5, seed=3), views_of(labels, 2, 5, seed=4)
    value = HyConLoss(3)(pred, proj, labels)
    assert value.item() == pytest.approx(slow_hycon(pred, proj, labels), rel=1e-12)
    # two views: exactly sim(h1, u2, sg z2) + sim(h2, u1, sg z1)
    cos = F.cosine_similarity
    u = [torch.stack([proj[labels == labels[i], b].mean(0) for i in range(6)]) for b in range(2)]
    eq8 = (
        -cos(pred[:, 0], proj[:, 1], dim=1)
        - cos(u[1], proj[:, 1], dim=1)
        - cos(pred[:, 1], proj[:, 0], dim=1)
        - cos(u[0], proj[:, 0], dim=1)
    ).mean()
    assert value.item() == pytest.approx(eq8.item(), rel=1e-12)
    three = views_of(labels, 3, 5, seed=5), views_of(labels, 3, 5, seed=6)
    assert HyConLoss()(*three, labels).item() == pytest.approx(
        slow_hycon(*three, labels), rel=1e-12
    )


def test_hycon_minimum_when_collapsed() -> None:
    proj, labels, _ = collapsed_views([4, 2, 1, 1], v=2)
    proj = (proj * 3.0).requires_grad_(True)
    pred = (proj.detach() * 0.5).requires_grad_(True)
    value = HyConLoss(4)(pred, proj, labels)
    assert value.item() == pytest.approx(-4.0, abs=1e-12)  # -2V: its minimum, not 0
    value.backward()
    assert pred.grad.abs().max() < 1e-12 and proj.grad.abs().max() < 1e-12


def test_hycon_stop_gradient_on_z() -> None:
    # every class has one sample: u = z, so the only path to z (through u) has zero gradient
    labels = torch.tensor([0, 1, 2, 3])
    proj = views_of(labels, 2, 5, seed=7).requires_grad_(True)
    pred = views_of(labels, 2, 5, seed=8).requires_grad_(True)
    HyConLoss(4)(pred, proj, labels).backward()
    assert proj.grad.abs().max() < 1e-12  # zero up to rounding
    assert pred.grad.abs().sum() > 0
    # in general z gets gradient only through the class means u (z itself is a constant)
    labels = torch.tensor([0, 0, 1, 1, 1])
    proj = views_of(labels, 2, 5, seed=9).requires_grad_(True)
    pred = views_of(labels, 2, 5, seed=10)
    (g_loss,) = torch.autograd.grad(HyConLoss(2)(pred, proj, labels), proj)
    z = F.normalize(proj.detach(), dim=2)
    ref = 0.0
    for b in range(2):
        u = torch.stack([proj[labels == labels[i], b].mean(0) for i in range(5)])
        ref = ref - (F.normalize(u, dim=1) * z[:, b]).sum() / 5
    (g_ref,) = torch.autograd.grad(ref, proj)
    torch.testing.assert_close(g_loss, g_ref)
    assert g_loss.abs().sum() > 0
    # the gradient to the predictions is that of the value (no stop-gradient on h)
    pred = pred.clone().requires_grad_(True)
    loss = HyConLoss(2)
    assert gradcheck(lambda p: loss(p, proj.detach(), labels), (pred,), eps=1e-6, atol=1e-7)


# ---- every contrastive loss: awkward batches, gradients ------------------------------------

LOSS_CALLS = {
    "supcon": lambda p, y, c: SupConLoss(0.2)(p, y),
    "bcl": lambda p, y, c: BCLLoss(6, 0.2)(p, y, c),
    "bcl_noproto": lambda p, y, c: BCLLoss(6, 0.2)(p, y),
    "bcl_l2": lambda p, y, c: BCLLoss(6, 0.2, variant="l2")(p, y, c),
    "bcl_l3": lambda p, y, c: BCLLoss(6, 0.2, variant="l3")(p, y, c),
    "hycon": lambda p, y, c: HyConLoss(6)(p, p.flip(1) * 0.5, y),
}


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_absent_and_single_sample_classes_finite(name: str) -> None:
    labels = torch.tensor([0, 0, 1, 0, 3, 0, 3])  # 1 single, 2/4/5 absent
    proj = views_of(labels, 2, 6, seed=11).requires_grad_(True)
    protos = torch.randn(6, 6, dtype=D64, requires_grad=True)
    value = LOSS_CALLS[name](proj, labels, protos)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(proj.grad).all()
    assert protos.grad is None or torch.isfinite(protos.grad).all()


@pytest.mark.parametrize("name", sorted(set(LOSS_CALLS) - {"hycon"}))
def test_gradcheck(name: str) -> None:
    labels = torch.tensor([0, 1, 1, 3])
    proj = views_of(labels, 2, 3, seed=12).requires_grad_(True)
    protos = torch.randn(6, 3, dtype=D64, requires_grad=True)
    assert gradcheck(lambda p, c: LOSS_CALLS[name](p, labels, c), (proj, protos), eps=1e-6)


def test_registered() -> None:
    assert LOSSES.get("supcon") is SupConLoss
    assert LOSSES.get("bcl") is BCLLoss
    assert LOSSES.get("hycon") is HyConLoss


# ---- the global-batch contract: two gloo processes = one process on the whole batch ---------


def _ddp_cases() -> dict:
    from nclt.losses.geometry import DisALoss, DotRegressionLoss
    from nclt.losses.regularizers import (
        BetweenClassLoss,
        CenterLoss,
        P2PLoss,
        WithinClassLoss,
    )

    torch.manual_seed(0)
    etf = simplex_etf(6, 5, dtype=D64).T.contiguous()
    return {
        "inc_within": (WithinClassLoss(5).double(), "feat"),
        "inc_within_learnable": (WithinClassLoss(5, 6, centres="learnable").double(), "feat"),
        "inc_between": (BetweenClassLoss(5).double(), "feat"),
        "center": (CenterLoss(5, 6).double(), "feat"),
        "p2p": (P2PLoss(5).double(), "feat"),
        "dr": (DotRegressionLoss(), "geom"),
        "disa": (DisALoss(etf=etf, epsilon=0.2, tol=None).double(), "geom"),
        "disa_unrolled": (
            DisALoss(etf=etf, epsilon=0.2, tol=None, gradient="unrolled").double(),
            "geom",
        ),
        "supcon": (SupConLoss(0.2), "proj"),
        "bcl": (BCLLoss(5, 0.2), "proto"),
        "hycon": (HyConLoss(5), "hycon"),
    }


def _ddp_data():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 1, 0, 3, 0, 3, 2, 0, 1, 0, 4])
    feats = torch.randn(12, 6, generator=g, dtype=D64)
    proj = torch.randn(12, 2, 6, generator=g, dtype=D64)
    protos = torch.randn(5, 6, generator=g, dtype=D64)
    etf = simplex_etf(6, 5, dtype=D64).T.contiguous()
    return feats, proj, labels, protos, etf


def _ddp_grads(rows: slice) -> dict[str, list[torch.Tensor]]:
    """Loss value and gradients (inputs, shared tensors, loss parameters) on ``rows``."""
    feats, proj, labels, protos, etf = _ddp_data()
    out = {}
    for name, (loss, kind) in _ddp_cases().items():
        f = feats[rows].clone().requires_grad_(True)
        p = proj[rows].clone().requires_grad_(True)
        c = protos.clone().requires_grad_(True)
        y = labels[rows]
        if kind == "feat":
            value = loss(f, y)
        elif kind == "geom":
            value = loss(f, y, etf)
        elif kind == "proj":
            value = loss(p, y)
        elif kind == "proto":
            value = loss(p, y, c)
        else:
            value = loss(p * 2.0, p.flip(1), y)
        value.backward()
        grads = [value.detach(), f.grad, p.grad, c.grad]
        grads += [q.grad for q in loss.parameters()]
        out[name] = [torch.zeros(()) if t is None else t.detach() for t in grads]
    return out


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.save(_ddp_grads(slice(6 * rank, 6 * rank + 6)), Path(out_dir, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()


@pytest.mark.dist
def test_two_processes_match_one_process(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # spawn, not fork: forking after the parent's OpenMP pool has run can deadlock the child.
    mp.start_processes(
        _ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    whole = _ddp_grads(slice(0, 12))
    for name, (value, g_feat, g_proj, g_proto, *g_params) in whole.items():
        r0, r1 = ranks[0][name], ranks[1][name]
        if name not in ("dr", "center"):  # per-sample means: each rank holds its own value
            # the value is the global-batch loss on every rank (its gradient is scaled by W)
            assert r0[0].item() == pytest.approx(value.item(), rel=1e-9), name
            assert r1[0].item() == pytest.approx(value.item(), rel=1e-9), name
        # DDP averages gradients: (rank 0 + rank 1) / 2 must be the one-process gradient
        for slot, want in ((1, g_feat), (2, g_proj)):
            if want.dim():
                got = torch.cat([r0[slot], r1[slot]])
                torch.testing.assert_close(got / 2, want, msg=name)
        for i, want in enumerate([g_proto, *g_params]):
            if want.dim():
                torch.testing.assert_close((r0[3 + i] + r1[3 + i]) / 2, want, msg=name)
