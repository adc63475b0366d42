"""Geometry losses against a fixed simplex ETF: ETF-DR's dot regression and DisA's OT alignment.

Call shape ``loss(features (B, D), labels (B,), head_weight (K, D)) -> scalar``, where
``head_weight`` holds the ETF vectors as rows (a fixed-ETF head's ``weight``, or
``nclt.geometry.simplex_etf(D, K).T``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclt.errors import ConfigError
from nclt.geometry import simplex_etf
from nclt.losses import LOSSES
from nclt.losses import functional as NF

Scope = Literal["global", "local"]

__all__ = ["DisALoss", "DotRegressionLoss", "transport_plan"]


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_etf_rows(etf: Tensor, feature_dim: int) -> None:
    if etf.dim() != 2 or etf.shape[1] != feature_dim:
        raise ConfigError(
            f"the ETF must be (K, D) with D = {feature_dim} (the ETF vectors as rows), got shape "
            f"{tuple(etf.shape)}; nclt.geometry.simplex_etf returns (D, K): pass its .T"
        )


@LOSSES.register("dr")
class DotRegressionLoss(nn.Module):
    """Dot-regression loss of ETF-DR (Yang et al., NeurIPS 2022; DisA Eq. 19).

    ``L = 1/2 mean_i (h_i . m_{y_i} - ||m_{y_i}|| ||h_i||)^2 / ||h_i||`` with ``||h||`` a
    constant (no gradient), as in Yang et al.'s code. DisA Eq. 19 leaves ``E_H`` and ``E_M``
    open; following Yang et al. (OFFICIAL-CODE-NOTES, ERRATA):

    * ``E_H``: the features are L2-normalized (``normalize=True``), so ``||h|| = 1``. The
      learnable BatchNorm1d that Yang et al. put before the normalization is part of the
      fixed-ETF head (models/heads.py), not of this loss; normalizing again here is a no-op
      on that head's output.
    * ``E_M``: per-batch target lengths (``lengths="batch"``): class c's ETF vector is scaled
      by ``sqrt((B / number of classes present) / n_c)``, ``n_c`` its count in the (global)
      batch, absent classes 1 -- tail classes get longer targets. Under MixUp the two label
      sets are permutations of each other, so the lengths are those of the un-mixed labels.

    Args:
        lengths: ``"batch"`` (default, above), ``"unit"`` (plain DR: the ETF vectors as given,
            unit for a simplex ETF) or ``"dataset"`` (``sqrt((N/K) / N_c)`` from
            ``class_counts``, Yang et al.'s ``produce_global_Ew``).
        normalize: L2-normalize the features (default True, see above).
        class_counts: (K,) training images per class, for ``lengths="dataset"``.
        scope: batch counts over the ``"global"`` (default) or ``"local"`` batch; the loss is
            a per-sample mean, so DDP's averaging already gives the global-batch gradient.

    Forward:
        features (B, D), labels (B,), head_weight (K, D) (the fixed ETF as rows) -> scalar.
        The loss is 0 iff every ``h_i`` is parallel to ``m_{y_i}`` (any positive length).
        ``reduction="none"`` returns (B,).
    """

    def __init__(
        self,
        lengths: Literal["batch", "unit", "dataset"] = "batch",
        normalize: bool = True,
        class_counts: Tensor | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("lengths", lengths, ("batch", "unit", "dataset"))
        _check_choice("reduction", reduction, ("mean", "sum", "none"))
        _check_choice("scope", scope, ("global", "local"))
        self.lengths = lengths
        self.normalize = bool(normalize)
        self.reduction = reduction
        self.scope = scope
        if lengths == "dataset":
            if class_counts is None:
                raise ConfigError("dr with lengths='dataset' needs class_counts")
            cc = torch.as_tensor(class_counts, dtype=torch.float32)
            self.register_buffer("dataset_lengths", NF.dr_target_lengths(cc), persistent=False)
        else:
            self.dataset_lengths = None

    def forward(self, features: Tensor, labels: Tensor, head_weight: Tensor) -> Tensor:
        """features (B, D), labels (B,), head_weight (K, D) -> scalar (or (B,))."""
        _check_etf_rows(head_weight, features.shape[1])
        num_classes = head_weight.shape[0]
        h = F.normalize(features, dim=1) if self.normalize else features
        m = head_weight.to(h.dtype)
        if self.lengths == "batch":
            counts = NF.batch_class_counts(labels, num_classes, scope=self.scope)
            m = m * NF.dr_target_lengths(counts.to(h.dtype))[:, None]
        elif self.dataset_lengths is not None:
            m = m * self.dataset_lengths.to(h.dtype)[:, None]
        per_sample = NF.dot_regression(h, m[labels])
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()


def _sinkhorn_pot(cost: Tensor, epsilon: float, iterations: int, tol: float | None) -> Tensor:
    """log T from POT's log-domain Sinkhorn (``ot.bregman.sinkhorn_log``), for comparison."""
    import ot  # POT; imported lazily (a dependency, but heavy to import)

    n, k = cost.shape
    a = cost.new_full((n,), 1.0 / n)
    b = cost.new_full((k,), 1.0 / k)
    plan = ot.bregman.sinkhorn_log(
        a,
        b,
        cost,
        epsilon,
        numItermax=iterations,
        stopThr=0.0 if tol is None else tol,
        warn=False,
    )
    log_plan: Tensor = plan.clamp_min(torch.finfo(plan.dtype).tiny).log()
    return log_plan


def transport_plan(
    features: Tensor,
    etf: Tensor,
    epsilon: float = 1.0,
    iterations: int = 100,
    tol: float | None = 1e-5,
    method: Literal["auto", "log", "scaling"] = "auto",
) -> Tensor:
    """DisA's entropic transport plan between a batch and the ETF vertices (diagnostics).

    Args:
        features: (B, D) features (normalized here).
        etf: (K, D) ETF vectors as rows (normalized here).
        epsilon: entropic regularization.
        iterations: maximum Sinkhorn iterations.
        tol: marginal tolerance for early stopping (None: run all iterations).
        method: Sinkhorn variant, see ``nclt.losses.functional.entropic_log_plan``.

    Returns:
        T (B, K), no gradient: rows sum to 1/B, columns to 1/K.
    """
    _check_etf_rows(etf, features.shape[1])
    with torch.no_grad():
        cost = 1.0 - F.normalize(features, dim=1) @ F.normalize(etf.to(features.dtype), dim=1).T
        log_plan, _ = NF.entropic_log_plan(cost, epsilon, iterations, tol, method=method)
    return log_plan.exp()


@LOSSES.register("disa")
class DisALoss(nn.Module):
    """DisA: optimal-transport alignment of the batch features with a simplex ETF (Eq. 8-10).

    ``P = 1/B sum_i delta_{h_i}`` (the batch) and ``Q = 1/K sum_k delta_{m_k}`` (the ETF
    vertices), cost ``C_ik = 1 - cos(h_i, m_k)``; ``T*`` is the entropic OT plan (Sinkhorn,
    in the log domain when ``epsilon`` is small, so 0.01 stays finite) and the loss is Eq. 9
    / Algorithm 1: ``L = <T*, C>`` (``objective="cost"``, default). Appendix A writes the
    entropic value ``<T*, C> - eps H(T*)`` instead (``objective="entropic"``). No labels
    enter: on an imbalanced batch the loss is smallest when the features spread evenly over
    the vertices, whatever their labels (ERRATA).

    Gradient (``gradient``): ``"envelope"`` (default) detaches the plan and differentiates
    ``<T*, C(h)>`` through the cost only, as DisA 4.1 describes the procedure ("first
    optimize the entropy regularized OT loss to learn the transport plan T*, which further
    allows one to learn ... theta by minimizing the DisA loss"). By the envelope theorem it
    is the exact gradient of the entropic OT value (Appendix A's objective) at convergence;
    it costs one Sinkhorn solve without autograd memory. It is not the exact gradient of
    Eq. 9's ``<T*, C>``, which also has ``<dT*/dC, C>``: ``"unrolled"`` backpropagates
    through every Sinkhorn iteration and gives that (autograd memory per iteration: two
    (B, K) tensors in the log domain, vectors only in the scaling domain). Measured (K=10,
    B=128, D=64, random features): the envelope gradient points the same way as the unrolled
    one (cosine 0.999 at epsilon 1, 0.98 at 0.1) with about half its norm (0.50x, 0.53x),
    so with ``gradient="unrolled"`` the same lambda weighs DisA about twice as much.

    At the paper's ``epsilon = 1`` the costs (in [0, 2]) barely move the plan away from
    uniform, and under a uniform plan the loss is exactly 1 for any features (the ETF vectors
    sum to zero, so the mean cosine to them is 0). Measured (float64, K=10, class-balanced
    batch of 40, D=16, random start -> every feature on its own vertex): epsilon = 1 goes
    only from 0.938 to 0.831, so the term acts much like the mean cosine to all vertices;
    epsilon = 0.1 goes from 0.645 to 0.0001. (At the vertices the value is
    ``(K-1) c e^{-c/eps} / (1 + (K-1) e^{-c/eps})``, ``c = K/(K-1)``.) Right at a random
    start the value is flat (it may rise by ~1e-3 along the first fifth of that path at
    epsilon 0.1).

    Sinkhorn: ``method="auto"`` runs plain-domain matrix scaling (two mat-vecs per iteration)
    when ``(max C - min C)/epsilon <= 30`` (epsilon >= 0.067 for cosine costs) and the
    log-domain iteration (two ``logsumexp`` passes) otherwise, so epsilon = 0.01 (and 1e-3)
    stays finite. Measured on this machine's shared CPU (1-2 threads, float32, B=512,
    K=8142, 100 iterations without early stop, median of 2; timings vary ~2x with load):
    log domain: this implementation 0.9-2.4 s per solve vs POT 0.9.7
    ``ot.bregman.sinkhorn_log`` 0.9-2.7 s (the same loop; equal within noise); scaling: this
    implementation 0.07-0.21 s vs POT ``ot.sinkhorn(method="sinkhorn")`` 0.13-0.33 s; plans
    equal to 3e-6 (relative). POT is not faster, so the torch loop is the default and
    ``backend="pot"`` (log domain) is kept for cross-checking. With ``tol`` the loop stops
    once the row marginals match to ``tol`` (checked every ``check_every`` iterations): at
    epsilon = 1 or 0.1 on random features that is after 10 iterations, at 0.01 after 30.

    Under DDP (``scope="global"``) the transport problem is the global batch's: features are
    gathered with ``nclt.dist.gather_keep_grad`` and the loss's gradient is multiplied by the
    world size (its value is the global batch's).

    Args:
        num_classes: K (with ``feature_dim``, builds the ETF ``simplex_etf(D, K, seed).T``
            when ``etf`` is not given).
        feature_dim: D.
        etf: (K, D) ETF vectors as rows (overrides num_classes/feature_dim).
        epsilon: entropic regularization (DisA 5.1: 1).
        iterations: maximum Sinkhorn iterations (default 100).
        tol: early-stopping tolerance on the row marginals (None: always ``iterations``).
        check_every: iterations between tolerance checks (each check syncs with the host).
        gradient: ``"envelope"`` (default) or ``"unrolled"``.
        objective: ``"cost"`` (Eq. 9, default) or ``"entropic"`` (Appendix A).
        seed: seed of the ETF built here.
        backend: ``"torch"`` (default) or ``"pot"`` (POT's ``sinkhorn_log``; its gradient
            flows through its iterations when ``gradient="unrolled"``).
        scope: ``"global"`` or ``"local"`` transport problem.
        standardize: standardize every feature dimension with the (global) batch's mean and
            biased variance before the cost (``(h - mean) / sqrt(var + 1e-5)``, gradient
            through the statistics), as the official DisA CIFAR script does: it passes the
            features through a BatchNorm1d in training mode whose affine parameters are never
            optimized (they stay 1 and 0), then L2-normalizes them. Off by default (DisA 4.1
            writes the cost on the features themselves). It matters for post-ReLU features:
            they are nonnegative, so their cosine to an ETF vertex (which has negative
            coordinates) is bounded; centred features can reach every vertex.

    Forward:
        features (B, D), labels (B,) (unused: DisA has no labels; kept for the call shape),
        head_weight (K, D) or None -> scalar. ``head_weight`` replaces the constructor's ETF
        (pass it with a fixed-ETF head; with a learnable classifier leave it out so the loss
        uses its own fixed ETF, DisA Fig. 1 bottom).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        feature_dim: int | None = None,
        etf: Tensor | None = None,
        epsilon: float = 1.0,
        iterations: int = 100,
        tol: float | None = 1e-5,
        check_every: int = 10,
        gradient: Literal["envelope", "unrolled"] = "envelope",
        objective: Literal["cost", "entropic"] = "cost",
        seed: int = 0,
        method: Literal["auto", "log", "scaling"] = "auto",
        backend: Literal["torch", "pot"] = "torch",
        scope: Scope = "global",
        standardize: bool = False,
    ) -> None:
        super().__init__()
        _check_choice("gradient", gradient, ("envelope", "unrolled"))
        _check_choice("method", method, ("auto", "log", "scaling"))
        _check_choice("objective", objective, ("cost", "entropic"))
        _check_choice("backend", backend, ("torch", "pot"))
        _check_choice("scope", scope, ("global", "local"))
        if epsilon <= 0:
            raise ConfigError(f"epsilon must be positive, got {epsilon}")
        if iterations < 1 or check_every < 1:
            raise ConfigError("iterations and check_every must be at least 1")
        self.epsilon = float(epsilon)
        self.iterations = int(iterations)
        self.tol = tol
        self.check_every = int(check_every)
        self.gradient = gradient
        self.objective = objective
        self.method = method
        self.backend = backend
        self.scope = scope
        self.standardize = bool(standardize)
        if etf is None and num_classes is not None and feature_dim is not None:
            etf = simplex_etf(feature_dim, num_classes, seed=seed).T.contiguous()
        if etf is not None:
            etf = torch.as_tensor(etf)
            if not etf.is_floating_point():
                etf = etf.float()
            if etf.dim() != 2:
                raise ConfigError(f"etf must be (K, D), got shape {tuple(etf.shape)}")
            self.register_buffer("etf", etf.clone(), persistent=False)
        else:
            self.etf = None

    def _log_plan(self, cost: Tensor) -> Tensor:
        if self.backend == "pot":
            return _sinkhorn_pot(cost, self.epsilon, self.iterations, self.tol)
        log_plan, _ = NF.entropic_log_plan(
            cost, self.epsilon, self.iterations, self.tol, self.check_every, self.method
        )
        return log_plan

    def forward(
        self, features: Tensor, labels: Tensor | None = None, head_weight: Tensor | None = None
    ) -> Tensor:
        """features (B, D), labels (B,) (unused), head_weight (K, D) or None -> scalar."""
        etf = head_weight if head_weight is not None else self.etf
        if etf is None:
            raise ConfigError(
                "disa needs the ETF: build it with num_classes and feature_dim (or etf=...), "
                "or pass head_weight"
            )
        _check_etf_rows(etf, features.shape[1])
        world = NF.scope_world_size(self.scope)
        feats = NF.gather_for_scope(features, self.scope)
        if self.standardize:  # (the engine hands losses float32 features under autocast)
            mean = feats.mean(dim=0, keepdim=True)
            var = feats.var(dim=0, unbiased=False, keepdim=True)
            feats = (feats - mean) * torch.rsqrt(var + 1e-5)
        cost = 1.0 - F.normalize(feats, dim=1) @ F.normalize(etf.to(feats.dtype), dim=1).T
        if self.gradient == "envelope":
            log_plan = self._log_plan(cost.detach())
        else:
            log_plan = self._log_plan(cost)
        plan = log_plan.exp()
        loss = (plan * cost).sum()
        if self.objective == "entropic":
            # -eps H(T) = eps sum T log T; with the envelope gradient it is a constant.
            neg_entropy = (plan * log_plan).sum()
            loss = loss + self.epsilon * (
                neg_entropy.detach() if self.gradient == "envelope" else neg_entropy
            )
        return NF.scale_grad(loss, world)
