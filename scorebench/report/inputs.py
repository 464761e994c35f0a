"""What a paper study's figures and summary section read: the study table, the job files, and the
few facts from the study's presets that the table does not hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ReportInputs:
    """Everything a paper study (scorebench.report.PaperStudy) draws from.

    Args:
        table: the study table (metrics.parquet as a DataFrame).
        study: the study's name (the summary's title).
        settings: the config's `figures:` block (flags, fps, grid_size).
        figures_dir: where the figures are written (and the summary's sections find them).
        samples: samples .npz files; fields: score-field .npz files.
        mixtures: {dataset: {"means", "stds", "weights"}} of the Gaussian-mixture datasets.
        sigmas: {(dataset, schedule): [σ_1, ..., σ_L]} of the toy datasets.
        annealed_samplers: names of the samplers of kind annealed_langevin.
        denoising_samplers: names of the samplers that end with a denoising step (`denoise: true`).
        wanted: the figure names the workflow declared (scorebench.report.paper_figures); None: every
            figure the table can fill (a declared one with nothing to draw raises NothingToDraw).
    """

    table: Any
    study: str = ""
    settings: dict = field(default_factory=dict)
    figures_dir: Path = Path("figures")
    samples: tuple = ()
    fields: tuple = ()
    mixtures: dict = field(default_factory=dict)
    sigmas: dict = field(default_factory=dict)
    annealed_samplers: tuple = ()
    denoising_samplers: tuple = ()
    wanted: tuple | None = None

    def __post_init__(self):
        self.figures_dir = Path(self.figures_dir)
