"""The report of a study: the figures and tables every study gets, and the paper studies its
`figures:` block asks for, each one module found through the registry below.

Each paper study owns its figures, its numbers and its summary section, and says in `check` which
configs it cannot draw (refused when the config is read, before any job runs). study.py, the
Snakefile and the report job all read this registry to know a study's files and inputs; the studies
import matplotlib and pandas only when they draw, so reading it stays cheap.

No figure is a placeholder: the registry says, from the study's config alone, which figures the
study can produce (`declared_default_figures(study)`, `paper_figures(study)`), only those are declared as
workflow outputs and shown in the report, and the drawing jobs are told that list; a listed figure
the table cannot fill is an error (plotting.NothingToDraw), never a card of text.

A new paper study is one module here (FIGURES, check, figures, section), one PaperStudy entry in
PAPER_STUDIES, one boolean under the schema's `figures:` block and one caption per figure in
workflow/report/{figure}.rst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scorebench.report import animation, levels, mode_weights, objectives, sampler_nfe, score_fields
from scorebench.report.requirements import common_sigmas

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
        produces: study -> the names among `figures` this config can fill (None: all of them).
    """

    flag: str
    figures: tuple[str, ...]
    needs: tuple[str, ...]
    check: Callable
    draw: Callable
    section: Callable
    formats: tuple[str, ...] = ("png", "pdf")
    produces: Callable | None = None

    @property
    def figure_files(self) -> tuple[Figure, ...]:
        return tuple(Figure(name, "Paper figures", self.formats) for name in self.figures)

    def figure_files_for(self, study) -> tuple[Figure, ...]:
        """The figures this study's config can fill (every one of `figures` without a `produces`)."""
        names = set(self.figures if self.produces is None else self.produces(study))
        return tuple(f for f in self.figure_files if f.name in names)


def _study(module, flag: str, needs=("table",), formats=("png", "pdf")) -> PaperStudy:
    return PaperStudy(flag, module.FIGURES, tuple(needs), module.check, module.figures, module.section, formats,
                      getattr(module, "produces", None))  # fmt: skip


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
SUMMARY_CATEGORY = "Summary"  # the report category of tables/summary.md


def paper_studies(settings: dict) -> list[PaperStudy]:
    """The paper studies a `figures:` block turns on, in registry order."""
    return [s for flag, s in PAPER_STUDIES.items() if settings.get(flag)]


def paper_figures(study) -> list[Figure]:
    """The paper figures of the studies `study`'s `figures:` block turns on that its config can fill."""
    return [f for paper in paper_studies(study.figure_settings) for f in paper.figure_files_for(study)]


# ---------------------------------------------------------------------- what a config can produce
# Each reads the config through the Study (study.config, study.cells, study.samplers), no table.

UNTRAINED = ("oracle", "imported")  # objective kinds without a training log (study.UNTRAINED)


def has_positive_sigma(study) -> bool:
    """Some cell is score-errored at a σ > 0 (any noisy schedule, or a noiseless one at a noiseless σ > 0)."""
    kinds = {study.config["schedules"][c.schedule]["kind"] for c in study.cells}
    noiseless = study.config["evaluation"]["score_error"].get("noiseless_sigmas") or []
    return bool(kinds - {"none"}) or ("none" in kinds and any(s > 0 for s in noiseless))


def varies_levels(study) -> bool:
    """Some dataset × objective has cells at ≥ 2 distinct numbers of σ levels L."""
    from scorebench.results import schedule_n_levels

    seen: dict = {}
    for c in study.cells:
        L = schedule_n_levels(study.config["schedules"][c.schedule])
        if L is not None:
            seen.setdefault((c.dataset, c.objective), set()).add(L)
    return any(len(v) >= 2 for v in seen.values())


def has_trained_cell(study) -> bool:
    return any(study.config["objectives"][c.objective]["kind"] not in UNTRAINED for c in study.cells)


DEFAULT_PRODUCES = {
    "score_error_vs_sigma": has_positive_sigma,
    "score_error_by_density": lambda study: any(s > 0 for s in common_sigmas(study)),
    "sample_quality": lambda study: bool(study.samplers),
    "metric_vs_levels": varies_levels,
    "training_curves": has_trained_cell,
    "samples": lambda study: bool(study.samplers),
}


def declared_default_figures(study) -> tuple[Figure, ...]:
    """The figures of DEFAULT_FIGURES this study's config can fill: what the workflow declares as the
    `figures` rule's outputs and what its drawing job is asked for."""
    return tuple(f for f in DEFAULT_FIGURES if DEFAULT_PRODUCES[f.name](study))
