"""The JPEG offset: how far this project's JPEG re-encoded CIFAR-10 copy lowers accuracy, measured
per imbalance factor from our ``ce`` row against the papers' CE without MixUp."""

from __future__ import annotations

from dataclasses import dataclass

from nclt.reproduce.measure import Measured
from nclt.reproduce.published import CE_REFERENCE, CE_ROW
from nclt.reproduce.rows import IF_ORDER

#: points of slack above the JPEG offset before a gap "needs investigation".
TOLERANCE = 1.0


@dataclass
class Offset:
    """The JPEG offset used at one imbalance factor: paper CE - our CE (points)."""

    imbalance: float
    value: float | None  # measured here, or None
    used: float  # what the threshold uses (>= 0; 0 when unknown)
    text: str


def jpeg_offsets(found: dict[tuple[str, float], Measured], basis: str) -> dict[float, Offset]:
    """Offset per imbalance factor from the ``ce`` row; factors without a ``ce`` run use the
    IF 100 offset, and 0 when there is none (said in the text)."""
    measured: dict[float, tuple[float, str]] = {}
    for imbalance, (paper, source) in CE_REFERENCE.items():
        m = found.get((CE_ROW, imbalance))
        mean, _, n = m.top1(basis) if m else (None, None, 0)
        if mean is not None:
            measured[imbalance] = (
                paper - mean,
                f"{paper:g} (CE without MixUp; {source}) - "
                f"{mean:.2f} (ours, `{CE_ROW}`, {basis}-epoch mean of {n} "
                f"seed{'s' if n != 1 else ''})",
            )
    out = {}
    for imbalance in IF_ORDER:
        if imbalance in measured:
            value, how = measured[imbalance]
            used = max(value, 0.0)
            note = "" if value >= 0 else " (ours is above the paper: taken as 0)"
            out[imbalance] = Offset(
                imbalance, value, used, f"IF {imbalance:g}: {how} = {value:+.2f} points{note}"
            )
        elif 100.0 in measured:
            used = max(measured[100.0][0], 0.0)
            out[imbalance] = Offset(
                imbalance,
                None,
                used,
                f"IF {imbalance:g}: no `{CE_ROW}` run; the IF 100 offset ({used:.2f}) is used",
            )
        else:
            out[imbalance] = Offset(
                imbalance,
                None,
                0.0,
                f"IF {imbalance:g}: no `{CE_ROW}` run; offset unknown, taken as 0",
            )
    return out
