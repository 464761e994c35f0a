"""Report jobs: the study table and training curves, the default figures, and the paper figures
and summary a study's `figures:` block asks for."""

from __future__ import annotations

from scorebench.components import Components
from scorebench.dataset_kinds import MIXTURE_KINDS, TOY_KINDS
from scorebench.errors import ScorebenchError
from scorebench.results import write_text


def aggregate_job(inputs, out, *, train_logs=(), tables_dir=None) -> None:
    """Per-job tables → the study table (parquet + csv), training curves and summary tables."""
    from scorebench.aggregate import aggregate

    aggregate(inputs, out, train_logs=train_logs, tables_dir=tables_dir)


def figures_job(table, out_dir, *, curves=None, samples=()) -> None:
    """The default figures of every study, from its table, training curves and samples."""
    from scorebench.figures import make_figures

    make_figures(table, out_dir, curves=curves, samples=samples)


def study_figures_job(spec: dict, table, out_dir, *, fields=(), samples=(), summary=None) -> list:
    """The paper figures a study's `figures:` block asks for, and its summary.md.

    Builds from the spec what the figures need to name things: the true weights and means of the
    Gaussian-mixture datasets, the σ list of each toy (dataset, schedule) and the annealed samplers.
    """
    import pandas as pd

    from scorebench.study_figures import make_study_figures
    from scorebench.summary import study_summary

    settings = spec["figures"]
    try:
        df = pd.read_parquet(table)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is named, not traced
        raise ScorebenchError(f"table {table} is unreadable ({type(exc).__name__}: {exc})") from None
    mixtures, sigmas = {}, {}
    for name, ds_spec in spec["datasets"].items():
        if ds_spec["kind"] not in TOY_KINDS:
            continue
        dataset = Components({"dataset": ds_spec}).dataset
        dist = dataset.distribution
        if ds_spec["kind"] in MIXTURE_KINDS:
            mixtures[name] = {"means": dist.means.tolist(), "stds": dist.stds.tolist(), "weights": dist.weights.tolist()}
        for sch_name, sch in spec["schedules"].items():
            sigmas[(name, sch_name)] = Components({"schedule": sch}, dataset=dataset).schedule.sigmas.tolist()
    annealed = [n for n, smp in spec["samplers"].items() if smp["kind"] == "annealed_langevin"]
    written = make_study_figures(
        df, out_dir, settings=settings, fields=fields, samples=samples, mixtures=mixtures, sigmas=sigmas,
        samplers=annealed,
    )  # fmt: skip
    if summary is not None:
        n_frames = None
        gif = [p for p in written if str(p).endswith(".gif")]
        if gif:
            from PIL import Image

            with Image.open(gif[0]) as im:
                n_frames = im.n_frames
        text = study_summary(df, study=spec["study"], settings=settings, mixtures=mixtures, n_frames=n_frames)
        write_text(summary, text)
    return written
