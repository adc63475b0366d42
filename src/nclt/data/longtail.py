"""Long-tailed count profiles, the LDAM-DRW subset selection, and many/medium/few groups.

Everything here works on plain counts and label arrays, so ``nclt data`` can describe a
profile without any image file.

* :func:`longtail_counts` gives the number of training images per class of a profile.
* :func:`longtail_indices` picks which images are kept, exactly as the LDAM-DRW code does
  (Cao et al., NeurIPS 2019, ``imbalance_cifar.py``, copied by ARB-Loss, ETF-DR and BCL),
  so a CIFAR-LT built by nclt holds the same images as theirs.
* :func:`group_of_counts` splits classes into many / medium / few shots.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nclt.errors import ConfigError

PROFILES = ("exp", "step")
GROUP_RULES = ("default", "allnc")
GROUPS = ("many", "medium", "few")


def longtail_counts(
    n_max: int,
    num_classes: int,
    imbalance: float,
    profile: str = "exp",
    reverse: bool = False,
) -> list[int]:
    """Images per class of a long-tailed profile, head class first.

    ``exp``: ``n_i = int(n_max * (1 / IF) ** (i / (K - 1)))`` for class ``i`` in ``0..K-1``
    (Cui et al. 2019; Cao et al. 2019). ``step``: the first ``K // 2`` classes keep ``n_max``,
    the others ``int(n_max * (1 / IF))`` (for odd ``K`` the middle class is a tail class).
    The arithmetic is the LDAM-DRW code's, ``n_max * (1/IF) ** (i/(K-1))``, so the counts are
    the same integers as theirs. ``imbalance=1`` gives ``K`` classes of ``n_max``.

    Args:
        n_max: images of the largest class (CIFAR-10: 5000, CIFAR-100: 500).
        num_classes: number of classes ``K``.
        imbalance: imbalance factor ``IF = n_max / n_min``, finite and ``>= 1``.
        profile: ``"exp"`` or ``"step"``.
        reverse: reverse the class order of the counts (the last class becomes the head).

    Returns:
        ``K`` integer counts.

    Raises:
        ConfigError: an unknown profile, ``IF < 1`` or not finite, or an ``IF`` so large that a
            class would get no image.
    """
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ConfigError(f"n_max must be a positive integer, got {n_max!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ConfigError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if profile not in PROFILES:
        raise ConfigError(f"unknown imbalance profile {profile!r}; known: {', '.join(PROFILES)}")
    try:
        imb = float(imbalance)
    except (TypeError, ValueError):
        raise ConfigError(f"imbalance must be a number, got {imbalance!r}") from None
    if not math.isfinite(imb):
        raise ConfigError(f"imbalance must be finite, got {imbalance!r}")
    if imb < 1.0:
        hint = f"; did you mean {1.0 / imb:g}?" if imb > 0 else ""
        raise ConfigError(
            f"imbalance is n_max / n_min and must be >= 1 (1 = balanced), got {imbalance!r}{hint}"
        )
    ratio = 1.0 / imb  # LDAM-DRW's ``imb_factor``
    K = int(num_classes)
    if profile == "exp":
        if K == 1:
            counts = [int(n_max)]
        else:
            counts = [int(n_max * ratio ** (i / (K - 1.0))) for i in range(K)]
    else:
        head = K // 2
        counts = [int(n_max)] * head + [int(n_max * ratio)] * (K - head)
    if min(counts) < 1:
        first = next(i for i, n in enumerate(counts) if n < 1)
        raise ConfigError(
            f"imbalance {imbalance!r} with n_max={n_max} leaves class {first} with no image "
            f"({profile} profile, {K} classes); the imbalance can be at most {n_max}"
        )
    if reverse:
        counts.reverse()
    return counts


def longtail_indices(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    counts: Sequence[int],
    seed: int = 0,
) -> np.ndarray:
    """Indices of the images kept in a long-tailed subset, as LDAM-DRW selects them.

    The procedure, reproduced step for step so the kept images are bit-identical: seed numpy's
    legacy global generator once with ``seed``; for each class ``c`` in label order take
    ``idx = np.where(targets == c)[0]``, ``np.random.shuffle(idx)`` and keep ``idx[:n_c]``;
    concatenate in class order. Every class is shuffled, even one kept whole, because the
    shuffles share one random stream. The global numpy generator's state is saved before and
    restored after, so calling this leaves no hidden side effect.

    Args:
        targets: label of every image of the full split, shape ``(N,)``.
        counts: images to keep per class, ``(K,)``; class ``c`` is label ``c``.
        seed: the seed of the legacy generator (LDAM-DRW: 0).

    Returns:
        int64 indices into ``targets``, grouped by class in label order, shape ``(sum(counts),)``.

    Raises:
        ConfigError: a class has fewer images than ``counts`` asks for, or a count is negative.
    """
    if isinstance(targets, torch.Tensor):
        targets = targets.cpu().numpy()
    targets_np = np.asarray(targets, dtype=np.int64)
    counts = [int(n) for n in counts]
    if any(n < 0 for n in counts):
        raise ConfigError(f"counts must be >= 0, got {counts}")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        kept = []
        for c, n_c in enumerate(counts):
            idx = np.where(targets_np == c)[0]
            if len(idx) < n_c:
                raise ConfigError(
                    f"class {c} has {len(idx)} images but the profile asks for {n_c}; "
                    "lower n_max or the imbalance"
                )
            np.random.shuffle(idx)
            kept.append(idx[:n_c])
    finally:
        np.random.set_state(state)
    if not kept:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(kept).astype(np.int64, copy=False)


def indices_checksum(indices: Sequence[int] | np.ndarray) -> str:
    """SHA-256 (hex) of the indices as int64 little-endian bytes, in their order."""
    data = np.ascontiguousarray(np.asarray(indices, dtype="<i8")).tobytes()
    return hashlib.sha256(data).hexdigest()


_EXPORT_KEYS = ("dataset", "imbalance", "profile", "seed", "counts")


def export_indices(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the kept indices of a subset to a JSON file, with what is needed to rebuild it.

    The file holds ``{indices, counts, checksum, dataset, imbalance, profile, seed}`` plus any
    other key of ``meta`` (for example ``reverse``); the write is atomic (temporary file, then
    rename).

    Args:
        path: the JSON file to write.
        indices: kept indices into the original split, ``(M,)``.
        meta: must hold ``dataset``, ``imbalance``, ``profile``, ``seed`` and ``counts``
            (per-class counts of the kept images); ``CIFARLT.subset_meta()`` gives it.

    Returns:
        The dictionary written.

    Raises:
        ConfigError: a required key of ``meta`` is missing.
    """
    missing = [k for k in _EXPORT_KEYS if k not in meta]
    if missing:
        raise ConfigError(f"export_indices: meta lacks {', '.join(missing)}")
    arr = np.asarray(indices, dtype=np.int64)
    record: dict[str, Any] = {k: _plain(v) for k, v in meta.items()}
    record["counts"] = [int(n) for n in meta["counts"]]
    if sum(record["counts"]) != len(arr):
        raise ConfigError(
            f"export_indices: counts sum to {sum(record['counts'])} but there are "
            f"{len(arr)} indices"
        )
    record["indices"] = arr.tolist()
    record["checksum"] = indices_checksum(arr)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return record


def _plain(value: Any) -> Any:
    """numpy / torch scalars and arrays -> JSON-serialisable Python values."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_int_list(class_counts: Sequence[int] | np.ndarray | torch.Tensor) -> list[int]:
    if isinstance(class_counts, torch.Tensor):
        return [int(n) for n in class_counts.tolist()]
    return [int(n) for n in np.asarray(class_counts).reshape(-1).tolist()]


def group_of_counts(
    class_counts: Sequence[int] | np.ndarray | torch.Tensor, rule: str = "default"
) -> list[str]:
    """Many / medium / few group of every class from its training-image count.

    ``default``: many ``> 100``, medium ``20..100`` inclusive, few ``< 20`` (OLTR; INC 4.1.2,
    DisA 5.1, BCL 4.4). ``allnc``: a class with exactly 20 images is few (AllNC V-B), so
    medium is ``21..100``. On CIFAR-100-LT IF=100 class 69 has 20 images: 30 vs 31 few classes.

    Args:
        class_counts: training images per class, ``(C,)``.
        rule: ``"default"`` or ``"allnc"``.

    Returns:
        ``"many"``, ``"medium"`` or ``"few"`` per class.
    """
    if rule not in GROUP_RULES:
        raise ConfigError(f"unknown group rule {rule!r}; known: {', '.join(GROUP_RULES)}")
    few_below = 20 if rule == "default" else 21
    groups = []
    for n in _as_int_list(class_counts):
        if n > 100:
            groups.append("many")
        elif n >= few_below:
            groups.append("medium")
        else:
            groups.append("few")
    return groups


def group_sizes(
    class_counts: Sequence[int] | np.ndarray | torch.Tensor, rule: str = "default"
) -> dict[str, int | None]:
    """Number of classes per group; an empty group is ``None`` (JSON ``null``), never 0."""
    groups = group_of_counts(class_counts, rule)
    return {g: (groups.count(g) or None) for g in GROUPS}


def describe_counts(
    class_counts: Sequence[int] | np.ndarray | torch.Tensor,
    rule: str = "default",
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Text table of a count profile, as ``nclt data`` prints it.

    One row per class (index, name when given, count, group), then the total, the actual
    imbalance ``max / min`` and the number of classes per group; an empty group shows ``-``.

    Args:
        class_counts: training images per class, ``(C,)``.
        rule: the group rule, see :func:`group_of_counts`.
        classes: class names, ``(C,)``, optional.
        title: a first line, optional.

    Returns:
        The table, lines joined by newlines (no trailing newline).
    """
    counts = _as_int_list(class_counts)
    groups = group_of_counts(counts, rule)
    if classes is not None and len(classes) != len(counts):
        raise ConfigError(f"{len(classes)} class names for {len(counts)} counts")
    names = list(classes) if classes is not None else None
    idx_w = max(5, len(str(len(counts) - 1)))
    name_w = max([4, *(len(s) for s in names)]) if names else 0
    cnt_w = max(5, *(len(str(n)) for n in counts)) if counts else 5
    lines = [title] if title else []
    header = f"{'class':>{idx_w}}  " + (f"{'name':<{name_w}}  " if names else "")
    header += f"{'count':>{cnt_w}}  group"
    lines += [header, "-" * len(header)]
    for i, (n, g) in enumerate(zip(counts, groups, strict=True)):
        row = f"{i:>{idx_w}}  " + (f"{names[i]:<{name_w}}  " if names else "")
        lines.append(row + f"{n:>{cnt_w}}  {g}")
    lines.append("-" * len(header))
    total = sum(counts)
    lines.append(f"total: {total} images, {len(counts)} classes")
    if counts and min(counts) > 0:
        lines.append(f"imbalance (max/min): {max(counts) / min(counts):g}")
    sizes = group_sizes(counts, rule)
    shown = "  ".join(f"{g}: {'-' if sizes[g] is None else sizes[g]}" for g in GROUPS)
    lines.append(f"groups ({rule}): {shown}")
    return "\n".join(lines)
