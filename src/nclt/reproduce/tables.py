"""The report: each paper's table (published number, ours, Δ, Δ + offset, seeds, time,
status), the summary of every row we ran, the missing and flagged rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nclt.errors import NcltError
from nclt.reproduce.markdown import duration, markdown_table, pm
from nclt.reproduce.measure import Measured, measure
from nclt.reproduce.nc import nc_accuracy_section, nc_section
from nclt.reproduce.offsets import TOLERANCE, Offset, jpeg_offsets
from nclt.reproduce.published import (
    CE_REFERENCE,
    CE_ROW,
    PAPERS,
    PUBLISHED,
    Published,
    paper_key,
    published,
)
from nclt.reproduce.rows import IF_ORDER, if_rank


@dataclass
class Line:
    """One line of a paper's table: a published number and ours."""

    pub: Published
    measured: Measured | None
    basis: str  # the epoch compared with the paper
    offset: Offset

    @property
    def ours(self) -> float | None:
        return self.measured.top1(self.basis)[0] if self.measured else None

    @property
    def delta(self) -> float | None:
        """ours - paper (points), on ``basis``."""
        return None if self.ours is None else self.ours - self.pub.top1

    @property
    def flagged(self) -> bool:
        """Falls short of the paper by more than the offset plus one point."""
        return self.delta is not None and -self.delta > self.offset.used + TOLERANCE

    @property
    def status(self) -> str:
        if self.measured is None:
            return "missing"
        parts = []
        if self.flagged:
            parts.append("**needs investigation**")
        ref = CE_REFERENCE.get(self.pub.imbalance)
        if (
            self.pub.row == CE_ROW
            and ref
            and self.pub.top1 == ref[0]
            and self.offset.value is not None
        ):
            parts.append("offset reference")
        ours_mixup = self.measured.mixup
        if ours_mixup is not None and ours_mixup != self.pub.mixup:
            parts.append(
                f"MixUp: paper {'yes' if self.pub.mixup else 'no'}, "
                f"ours {'yes' if ours_mixup else 'no'}"
            )
        parts += self.measured.problems
        return "; ".join(parts) or "ok"

    def cells(self) -> list[str]:
        m = self.measured
        best, last = (m.top1("best"), m.top1("last")) if m else ((None, None, 0),) * 2
        d = self.delta
        return [
            f"`{self.pub.row}`",
            self.pub.label,
            f"{self.pub.imbalance:g}",
            "yes" if self.pub.mixup else "no",
            self.pub.text + ("" if self.pub.reported != "best" else " (best)"),
            pm(best[0], best[1]),
            pm(last[0], last[1]),
            "-" if d is None else f"{d:+.2f}",
            "-" if d is None else f"{d + self.offset.used:+.2f}",
            str(len(m.runs)) if m else "0",
            f"{duration(m.seconds)} / {duration(m.wall_seconds)}{m.device_mark}" if m else "-",
            self.status,
        ]


HEADER = [
    "row",
    "paper's row",
    "IF",
    "MixUp",
    "paper",
    "ours best",
    "ours last",
    "Δ",
    "Δ + offset",
    "seeds",
    "train / wall time",
    "status",
]


#: the summary's first rows: the baselines, then every published row in PUBLISHED's order
_SUMMARY_HEAD = ("ce", "ce_drw", "ce_mixup", "ce_drw_mixup", "ldam_drw", "ldam_drw_mixup")
_SUMMARY_ORDER = {
    r: i for i, r in enumerate(dict.fromkeys((*_SUMMARY_HEAD, *(p.row for p in PUBLISHED))))
}


def summary_rank(row: str) -> tuple[int, int, str]:
    """Sort key of a row in the summary: baselines first, then the papers' order; a variant
    without a published number (``ce_disa_fig8``, ``allnc_grw``) right after the longest
    published row its name starts with (``ce_disa``, ``allnc``), else last."""
    order = _SUMMARY_ORDER
    if row in order:
        return (order[row], 0, row)
    bases = [r for r in order if row.startswith(r + "_")]
    return (order[max(bases, key=len)], 1, row) if bases else (len(order), 1, row)


@dataclass
class Report:
    """Every paper's table, the offsets, and what is missing."""

    results: Path
    basis: str
    papers: list[str]
    lines: dict[str, list[Line]]
    offsets: dict[float, Offset]
    found: dict[tuple[str, float], Measured]

    @property
    def missing(self) -> list[tuple[str, float]]:
        """(row, IF) with a published number and no run, IF 100 first, without repeats."""
        seen = dict.fromkeys(
            (ln.pub.row, ln.pub.imbalance)
            for p in self.papers
            for ln in self.lines[p]
            if ln.measured is None
        )
        return list(seen)

    @property
    def flagged(self) -> list[Line]:
        return [ln for p in self.papers for ln in self.lines[p] if ln.flagged]

    @property
    def unpublished(self) -> list[tuple[str, float]]:
        """Rows we have that no paper publishes at that factor."""
        pub = {(p.row, p.imbalance) for p in PUBLISHED}
        return sorted(
            (k for k in self.found if k not in pub),
            key=lambda k: (if_rank(k[1]), k[0]),
        )

    def summary_rows(self) -> list[list[str]]:
        """One line per measured (row, IF), IF 100 first, rows in the papers' order: ours,
        every distinct published number with the papers that print it, Δ + offset against
        each, and one status (flagged against which papers). With ``--table`` only the rows
        that paper publishes."""
        by_key: dict[tuple[str, float], list[Line]] = {}
        for p in self.papers:
            for ln in self.lines[p]:
                if ln.measured is not None:
                    by_key.setdefault((ln.pub.row, ln.pub.imbalance), []).append(ln)
        keys = list(self.found) if len(self.papers) == len(PAPERS) else list(by_key)
        keys.sort(key=lambda k: (if_rank(k[1]), summary_rank(k[0])))
        rows = []
        for key in keys:
            m, lines = self.found[key], by_key.get(key, [])
            # one entry per published value (82.60 and 82.6 are one number) and basis
            numbers: dict[tuple[float, bool], list[Line]] = {}
            for ln in lines:
                numbers.setdefault((ln.pub.top1, ln.pub.reported == "best"), []).append(ln)
            paper = "; ".join(
                f"{lns[0].pub.text}{' (best)' if best else ''} "
                + ", ".join(dict.fromkeys(ln.pub.paper for ln in lns))
                for (_, best), lns in numbers.items()
            )
            delta = "; ".join(
                f"{lns[0].delta + lns[0].offset.used:+.2f}"  # type: ignore[operator]
                for lns in numbers.values()
            )
            flagged = list(dict.fromkeys(ln.pub.paper for ln in lines if ln.flagged))
            parts = [f"**needs investigation** (vs {', '.join(flagged)})"] if flagged else []
            for ln in lines:
                parts += [
                    s for s in ln.status.split("; ") if s not in ("ok", "**needs investigation**")
                ]
            if not lines:
                parts.append("no published number")
                parts += m.problems
            best, last = m.top1("best"), m.top1("last")
            rows.append(
                [
                    f"`{key[0]}`",
                    f"{key[1]:g}",
                    str(len(m.runs)),
                    pm(best[0], best[1]),
                    pm(last[0], last[1]),
                    paper or "-",
                    delta or "-",
                    "; ".join(dict.fromkeys(parts)) or "ok",
                    duration(m.seconds) + m.device_mark,
                ]
            )
        return rows

    def summary(self, heading: str = "### Summary: every row we have run") -> str:
        """Markdown: the offsets in one line and :meth:`summary_rows` as one table."""
        offsets = ", ".join(
            f"IF {f:g} {o.used:.2f}" + ("" if o.value is not None else " (IF 100's)")
            for f, o in self.offsets.items()
            if any(k[1] == f for k in self.found)
        )
        header = [
            "row",
            "IF",
            "seeds",
            "ours best",
            "ours last",
            "paper",
            "Δ + offset",
            "status",
            "train time",
        ]
        rows = self.summary_rows()
        return "\n".join(
            ([heading, ""] if heading else [])
            + [
                f"Ours against every paper that prints the row ({self.basis}-epoch top-1 where "
                'the paper does not say; "(best)": the paper\'s basis is known), Δ + offset '
                "against each number in the same order. JPEG offset used: "
                f"{offsets or 'none (no runs)'}. A row needs investigation when Δ + offset < "
                f"-{TOLERANCE:g} against any paper.",
                "",
                markdown_table(header, rows) if rows else "No runs in results/ yet.",
            ]
        )

    def render(self) -> str:
        """The whole report as Markdown (printed as is, and written by ``--markdown``)."""
        out = []
        measured_any = any(o.value is not None for o in self.offsets.values())
        out.append(
            "**JPEG offset** (this CIFAR-10 copy is JPEG re-encoded at quality 75; "
            "offset = paper's CE without MixUp - our `ce`, estimated per imbalance "
            "factor):"
        )
        out.append("")
        if measured_any:
            out += [f"- {self.offsets[f].text}" for f in IF_ORDER]
        else:
            out.append(
                f"- not measured yet: no `{CE_ROW}` run in results/. Until there is one "
                "the offset is taken as 0, so a row is flagged when it falls short of "
                "the paper by more than 1 point."
            )
        out.append("")
        out.append(
            f"Δ = ours - paper, where ours is the **{self.basis}-epoch** top-1, mean over "
            "our seeds (± sample std), except where the paper's basis is known (marked "
            "\"(best)\" after the paper's number: LDAM-DRW's code reports the best epoch). "
            "Δ + offset adds the JPEG offset back; a row **needs investigation** when "
            f"Δ + offset < -{TOLERANCE:g}, i.e. it falls short of the paper by more than "
            "the offset plus one point. Time: mean per run of the training steps "
            "(results.json `seconds`) / the whole run (`wall_seconds`: with the "
            'test evaluation, resumed parts included; "-" where a run was resumed from '
            "a checkpoint older than nclt's per-epoch wall times); a second stage counts "
            'its own stage only; "(GPU)" marks a row trained on a GPU, "(GPU + CPU)" one '
            "begun on a GPU and finished on the CPU, every other ran on the project's 2-core "
            "CPU."
        )
        out += ["", self.summary()]
        for key in self.papers:
            paper = PAPERS[key]
            tables = ", ".join(dict.fromkeys(ln.pub.table for ln in self.lines[key]))
            out += [
                "",
                f"### {key}: {paper.title}",
                "",
                f"Source: {tables} ({paper.source}). Protocol: {paper.protocol}. "
                f"Reported: {paper.reported}.",
                "",
            ]
            rows = [ln.cells() for ln in self.lines[key]]
            notes = [f"`{ln.pub.row}`: {ln.pub.note}" for ln in self.lines[key] if ln.pub.note]
            out.append(markdown_table(HEADER, rows))
            if notes:
                out += ["", "Notes: " + "; ".join(dict.fromkeys(notes)) + "."]
        for section in (nc_section(self.found), nc_accuracy_section(self.found)):
            if section:
                out += ["", section]
        out += ["", "### Missing rows", ""]
        missing = self.missing
        if not missing:
            out.append("None: every published row has at least one run.")
        else:
            out.append(
                f"{len(missing)} (row, IF) pairs with a published number have no run in results/:"
            )
            out.append("")
            for f in IF_ORDER:
                rows_f = [r for r, i in missing if i == f]
                if rows_f:
                    out.append(f"- IF {f:g} ({len(rows_f)}): " + ", ".join(rows_f))
        flagged = self.flagged
        out += ["", "### Needs investigation", ""]
        if flagged:
            out += [
                f"- `{ln.pub.row}` IF {ln.pub.imbalance:g} vs {ln.pub.paper} "
                f"({ln.pub.table}: {ln.pub.text}): Δ {ln.delta:+.2f}, Δ + offset "
                f"{ln.delta + ln.offset.used:+.2f}"
                for ln in flagged
            ]
            out.append("")
            out.append('Each needs a note in "Notes on gaps" below.')
        else:
            out.append("None so far.")
        extra = self.unpublished
        if extra:
            out += [
                "",
                "Runs without a published number in these tables: "
                + ", ".join(f"`{r}` IF {i:g}" for r, i in extra)
                + ".",
            ]
        return "\n".join(out) + "\n"


def build_report(
    results: str | Path = "results", paper: str | None = None, basis: str = "best"
) -> Report:
    """Read results/ and line our runs up against the published numbers."""
    if basis not in ("best", "last"):
        raise NcltError(f"--basis {basis!r}: expected best or last")
    found = measure(results)
    offsets = jpeg_offsets(found, basis)
    papers = [paper_key(paper)] if paper else list(PAPERS)
    lines: dict[str, list[Line]] = {}
    for key in papers:
        entries = sorted(published(key), key=lambda p: if_rank(p.imbalance))
        lines[key] = [
            Line(p, found.get((p.row, p.imbalance)), p.epoch_basis or basis, offsets[p.imbalance])
            for p in entries
        ]
    return Report(Path(results), basis, papers, lines, offsets, found)
