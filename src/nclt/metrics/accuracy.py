"""Overall, per-class and many / medium / few accuracy for long-tailed classification.

All accuracies are percentages in [0, 100]. Groups are defined by the *training* class counts
(see ``class_groups``); an empty group is reported as ``None``, never 0 (docs/METRICS.md).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from nclt.errors import ConfigError, closest

GroupRule = Literal["default", "allnc"]
GROUP_NAMES: tuple[str, str, str] = ("many", "medium", "few")
GROUP_RULES: tuple[str, str] = ("default", "allnc")


def class_groups(
    train_class_counts: Tensor | list[int], rule: str = "default"
) -> dict[str, Tensor]:
    """Split classes into many / medium / few shot groups by their training image counts.

    Args:
        train_class_counts: training images per class, shape (C,).
        rule: ``"default"``: many > 100, medium 20-100 (both ends included), few < 20
            (OLTR, INC 4.1.2, DisA 5.1, BCL 4.4). ``"allnc"``: as default except that a class
            with exactly 20 images is few (AllNC V-B).

    Returns:
        ``{"many": idx, "medium": idx, "few": idx}``, each a sorted LongTensor of class indices
        (possibly empty); every class is in exactly one group.
    """
    counts = torch.as_tensor(train_class_counts).detach().cpu().long().flatten()
    if rule == "default":
        few = counts < 20
    elif rule == "allnc":
        few = counts <= 20
    else:
        raise ConfigError(
            f"unknown group rule {rule!r}; choose one of {GROUP_RULES}."
            + closest(rule, GROUP_RULES)
        )
    many = counts > 100
    medium = ~many & ~few
    return {
        name: mask.nonzero().flatten()
        for name, mask in zip(GROUP_NAMES, (many, medium, few), strict=True)
    }


def accuracy_from_confusion(
    confusion: Tensor, groups: dict[str, Tensor] | None = None
) -> dict[str, Any]:
    """Accuracies (percent) from a confusion matrix (rows: true class, columns: predicted class).

    Args:
        confusion: (C, C) counts.
        groups: class indices per group name (``class_groups``); None skips the group means.

    Returns:
        dict with ``top1`` (correct / all samples), ``mean_per_class`` (mean over the classes
        that have samples), ``per_class`` (list of C, None for a class without samples),
        one key per group (mean of the group's per-class accuracies over its classes with
        samples; None when the group has no class or none of its classes has samples),
        ``confusion`` (C x C nested list of ints) and ``num_samples``.
    """
    confusion = confusion.detach().cpu().double()
    support = confusion.sum(dim=1)
    correct = confusion.diagonal()
    total = float(support.sum())
    has = support > 0
    per_class = torch.where(has, 100.0 * correct / support.clamp_min(1), torch.nan)
    out: dict[str, Any] = {
        "top1": 100.0 * float(correct.sum()) / total if total > 0 else None,
        "mean_per_class": float(per_class[has].mean()) if bool(has.any()) else None,
        "per_class": [
            float(a) if h else None for a, h in zip(per_class.tolist(), has.tolist(), strict=True)
        ],
    }
    for name, idx in (groups or {}).items():
        idx = idx[has[idx]]
        out[name] = float(per_class[idx].mean()) if idx.numel() > 0 else None
    out["confusion"] = confusion.long().tolist()
    out["num_samples"] = int(total)
    return out


class LongTailAccuracy(MulticlassConfusionMatrix):
    """Top-1, per-class and many / medium / few accuracy, in percent, synced across ranks.

    A ``torchmetrics`` ``MulticlassConfusionMatrix`` whose ``compute`` returns a dict: its one
    state, the (C, C) confusion matrix, is summed over DDP ranks by torchmetrics in
    ``compute()``. Every accuracy follows from the matrix, so the numbers are exact under DDP
    as long as evaluation shards do not pad (a repeated tail image moves tail accuracy).

    Args:
        num_classes: C.
        train_class_counts: training images per class, shape (C,); defines the groups.
        rule: group rule of ``class_groups`` (``"default"`` or ``"allnc"``).
        **kwargs: forwarded to ``MulticlassConfusionMatrix`` (``ignore_index``,
            ``validate_args``, ...; ``normalize`` is not allowed).

    ``update(logits_or_preds, labels)``: logits / probabilities (B, C) (arg-maxed) or
    predicted labels (B,), and labels (B,). ``compute()`` returns the dict of
    ``accuracy_from_confusion`` plus ``rule``: ``top1`` (sample accuracy; equals
    ``mean_per_class`` on a balanced test set), ``mean_per_class``, ``per_class``, ``many``,
    ``medium``, ``few`` (None for an empty group), ``confusion`` (rows true, columns
    predicted), ``num_samples``. ``reset()`` clears the state.
    """

    def __init__(
        self,
        num_classes: int,
        train_class_counts: Tensor | list[int],
        rule: str = "default",
        **kwargs: Any,
    ) -> None:
        if "normalize" in kwargs:
            raise ConfigError("LongTailAccuracy keeps raw counts; do not pass normalize.")
        super().__init__(num_classes=num_classes, **kwargs)
        counts = torch.as_tensor(train_class_counts).flatten()
        if counts.numel() != num_classes:
            raise ConfigError(
                f"train_class_counts has {counts.numel()} entries but num_classes={num_classes}."
            )
        self.rule = rule
        self.groups = class_groups(counts, rule)

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """Accuracies in percent (see the class docstring for the keys)."""
        out = accuracy_from_confusion(self.confmat, self.groups)
        out["rule"] = self.rule
        return out
