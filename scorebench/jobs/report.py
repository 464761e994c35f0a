"""Report jobs: the study table and training curves, the figures and summary tables every study
gets, and the paper figures and summary a study's `figures:` block asks for (scorebench.report)."""

from __future__ import annotations

from scorebench.components import Components
from scorebench.data.registry import MIXTURE_DATASETS, TOY_DATASETS
from scorebench.readers import read_table


def aggregate_job(inputs, out, *, train_logs=()) -> None:
    """Per-job tables → the study table (parquet + csv) and training curves."""
    from scorebench.aggregate import aggregate

    aggregate(inputs, out, train_logs=train_logs)


def figures_job(table, out_dir, *, tables_dir, curves=None, samples=(), real=(), only=None) -> None:
    """The default figures and summary tables of every study, from its table, training curves and samples;
    `only`: the figure names the workflow declared (scorebench.report.default_figures), None for all it can."""
    from scorebench.report.default_figures import make_default_figures
    from scorebench.report.summary_tables import write_summary_tables

    df = read_table(table, "study table")
    make_default_figures(df, out_dir, curves=read_table(curves, "training curves") if curves else None, samples=samples,
                         real=real, only=only)  # fmt: skip
    write_summary_tables(df, tables_dir)


def _preset_facts(spec: dict) -> tuple[dict, dict]:
    """The true weights and means of the Gaussian-mixture datasets, and the σ list of each toy
    (dataset, schedule): what the figures name things by and the table does not hold."""
    mixtures, sigmas = {}, {}
    for name, ds_spec in spec["datasets"].items():
        if ds_spec["kind"] not in TOY_DATASETS:
            continue
        dataset = Components({"dataset": ds_spec}).dataset
        dist = dataset.distribution
        if ds_spec["kind"] in MIXTURE_DATASETS:
            mixtures[name] = {"means": dist.means.tolist(), "stds": dist.stds.tolist(), "weights": dist.weights.tolist()}
        for sch_name, sch in spec["schedules"].items():
            sigmas[(name, sch_name)] = Components({"schedule": sch}, dataset=dataset).schedule.sigmas.tolist()
    return mixtures, sigmas


def study_figures_job(spec: dict, table, out_dir, *, fields=(), samples=(), summary=None) -> list:
    """The paper figures a study's `figures:` block asks for, and its summary.md; returns the figures written."""
    from scorebench.report.inputs import ReportInputs
    from scorebench.report.paper import write_paper_report

    mixtures, sigmas = _preset_facts(spec)
    inputs = ReportInputs(
        table=read_table(table, "study table"), study=spec["study"], settings=spec["figures"], figures_dir=out_dir,
        samples=tuple(samples), fields=tuple(fields), mixtures=mixtures, sigmas=sigmas,
        annealed_samplers=tuple(n for n, smp in spec["samplers"].items() if smp["kind"] == "annealed_langevin"),
        denoising_samplers=tuple(n for n, smp in spec["samplers"].items() if smp.get("denoise")),
        wanted=tuple(spec["paper_figures"]) if "paper_figures" in spec else None,
    )  # fmt: skip
    return write_paper_report(inputs, summary)
