"""Projection and prediction MLPs of the multi-view methods (BCL, AllNC).

These are *extra heads* (``MethodParts.extra_heads``): the network applies each one to the
per-view backbone features ``(B, V, D)`` and puts its output in the step context under the
head's name. They are not classifiers (no ``weight``), so they are not in ``HEADS``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLPHead", "ViewMLP"]


class MLPHead(nn.Module):
    """Two-layer MLP ``Linear -> [BatchNorm1d] -> ReLU -> Linear [-> BatchNorm1d]``.

    BCL's contrastive head (``z = W_1 relu(W_2 f)``; its released code puts a BatchNorm1d
    after the hidden layer), AllNC's projection and prediction MLPs (SimSiam-style). Any
    leading dimensions are flattened for the BatchNorm and restored afterwards, so
    ``(B, V, in_dim) -> (B, V, out_dim)`` normalises over all ``B * V`` rows together.

    Args:
        in_dim: input width.
        hidden_dim: hidden width.
        out_dim: output width.
        batchnorm: BatchNorm1d after the hidden layer.
        last_bn: BatchNorm1d (affine) on the output too (SimSiam's projection MLP).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        batchnorm: bool = True,
        last_bn: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=not last_bn)]
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        lead = x.shape[:-1]
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*lead, self.out_dim)


class ViewMLP(nn.Module):
    """An MLP on every view of ``(B, V, D)`` features, keeping views ``first_view`` onwards.

    The MLP sees all ``B * V`` rows (its BatchNorm statistics are those of the whole
    multi-view batch, as BCL's code applies its head to the concatenated three views); only
    the views from ``first_view`` on are returned: ``(B, V - first_view, out_dim)``.

    Args:
        mlp: the MLP (an :class:`MLPHead`).
        first_view: index of the first view kept (BCL: 1, its contrastive views; AllNC: 0).
    """

    def __init__(self, mlp: nn.Module, first_view: int = 0) -> None:
        super().__init__()
        self.mlp = mlp
        self.first_view = int(first_view)

    def forward(self, view_features: Tensor) -> Tensor:
        """``(B, V, D) -> (B, V - first_view, out_dim)``."""
        if view_features.dim() != 3 or view_features.shape[1] <= self.first_view:
            raise ValueError(
                f"{type(self).__name__} needs per-view features (B, V, D) with more than "
                f"{self.first_view} views, got {tuple(view_features.shape)}"
            )
        return self.mlp(view_features)[:, self.first_view :]

    def extra_repr(self) -> str:
        return f"first_view={self.first_view}"
