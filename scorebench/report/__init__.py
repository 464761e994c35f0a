"""The report of a study: the figures and tables every study gets, and the paper studies its
`figures:` block asks for, each one module found through the registry below.

Each paper study owns its figures, its numbers and its summary section, and says in `check` which
configs it cannot draw (refused when the config is read, before any job runs). study.py, the
Snakefile and the report job all read this registry to know a study's files and inputs; the studies
import matplotlib and pandas only when they draw, so reading it stays cheap.

A new paper study is one module here (FIGURES, check, figures, section), one PaperStudy entry in
PAPER_STUDIES, one boolean under the schema's `figures:` block and one caption per figure in
workflow/report/{figure}.rst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scorebench.report import animation, levels, mode_weights, objectives, sampler_nfe, score_fields

INPUTS = ("table", "samples", "fields")  # what a paper study may read: the study table, samples, score fields


@dataclass(frozen=True)
class Figure:
    """One figure file set: {name}.{format} for each format; the first is what the report shows,
    with the caption workflow/report/{name}.rst."""

    name: str
    category: str
    formats: tuple[str, ...] = ("png", "pdf")

    @property
    def shown(self) -> str:
        return f"{self.name}.{self.formats[0]}"

    @property
    def other_files(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.{ext}" for ext in self.formats[1:])

    @property
    def caption(self) -> str:
        return f"{self.name}.rst"


@dataclass(frozen=True)
class PaperStudy:
    """A paper study: turned on by `figures: {flag: true}`.

    Args:
        flag: its key under the config's `figures:` block.
        figures: the figure names it writes.
        needs: what it reads (a subset of INPUTS); the workflow passes only these.
        check: study -> None, or why this config cannot be drawn (e.g. "needs a 2-D toy dataset").
        draw: ReportInputs -> None, writes the figures into inputs.figures_dir.
        section: ReportInputs -> its Markdown section of summary.md.
        formats: the files of each figure, shown one first.
    """

    flag: str
    figures: tuple[str, ...]
    needs: tuple[str, ...]
    check: Callable
    draw: Callable
    section: Callable
    formats: tuple[str, ...] = ("png", "pdf")

    @property
    def figure_files(self) -> tuple[Figure, ...]:
        return tuple(Figure(name, "Paper figures", self.formats) for name in self.figures)


def _study(module, flag: str, needs=("table",), formats=("png", "pdf")) -> PaperStudy:
    return PaperStudy(flag, module.FIGURES, tuple(needs), module.check, module.figures, module.section, formats)


# In the order of summary.md's sections.
PAPER_STUDIES = {
    s.flag: s
    for s in (
        _study(score_fields, "score_fields", needs=("table", "fields")),
        _study(mode_weights, "mode_weights", needs=("table", "samples")),
        _study(sampler_nfe, "sampler_nfe"),
        _study(levels, "levels"),
        _study(objectives, "objectives"),
        _study(animation, "animation", needs=("samples",), formats=animation.FORMATS),
    )
}

# The figures every study gets (scorebench.report.default_figures), with their report categories.
DEFAULT_FIGURES = (
    Figure("score_error_vs_sigma", "Score error"),
    Figure("score_error_by_density", "Score error"),
    Figure("sample_quality", "Sample quality"),
    Figure("metric_vs_levels", "Ablations"),
    Figure("training_curves", "Training"),
    Figure("samples", "Sample quality"),
)
SUMMARY_TABLES = ("summary.md", "summary.tex")  # in tables/, every study (scorebench.report.summary_tables)


def paper_studies(settings: dict) -> list[PaperStudy]:
    """The paper studies a `figures:` block turns on, in registry order."""
    return [s for flag, s in PAPER_STUDIES.items() if settings.get(flag)]
