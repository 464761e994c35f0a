# Validation first, then the grid. Only this file reads `config`; it asks scorebench.study for
# cells and job specs. Each job gets its spec as a params value, so Snakemake reruns a
# job exactly when the settings it depends on change.
#
# One validator: scorebench's own, before anything else reads the config. The config files are
# read again strictly (Snakemake's loader keeps the last of two equal keys without a word), then
# the merged config is checked against the schema and filled with its defaults, then every
# setting combination that cannot finish is refused; any error is one line on stderr. Snakemake's
# `validate()` is not called: it would print the whole schema and config for one typo.
import sys

from scorebench import layout
from scorebench.config_file import read_config
from scorebench.errors import ScorebenchError
from scorebench.failures import job_errors
from scorebench.slurm_site import site_errors
from scorebench.report import SUMMARY_CATEGORY, SUMMARY_TABLES, declared_default_figures
from scorebench.specs import spec_json
from scorebench.study import Cell, Study, validate_config

try:
    for path in workflow.configfiles:
        read_config(path)
    STUDY = Study(validate_config(config))
except ScorebenchError as exc:
    sys.exit(f"scorebench: error: {exc}")

R = f"{STUDY.results_dir}/{STUDY.name}"

# Resources, in every rule: 1 thread (bench/threads.py: a second OpenMP thread made a packed job 9x
# slower on a shared 2-core machine); memory from the measured peak RSS (0.3-0.85 GB per job on the
# CPU study) plus a GPU job's CUDA context: 4000 MB for jobs on a GPU, 2000 MB for the summary jobs;
# `runtime` in minutes is a per-job ceiling. SLURM sends SIGTERM 120 s before a job's time limit:
# training and sampling then checkpoint and stop, and the resubmitted job resumes (retries in
# profiles/default). Every rule asks the same, so that jobs of one group agree on it.
SLURM_EXTRA = "--signal=TERM@120"
CELL = f"{R}/{layout.CELL}"


def study_path(name):
    """results/{study}/name"""
    return f"{R}/{name}"


def cell_path(name):
    """results/{study}/{dataset}/{schedule}/{objective}/seed{seed}/name (wildcards kept)."""
    return f"{CELL}/{name}"


def job_file(kind, rule, suffix, per_sampler=False):
    """Log or benchmark file of one job: results/{study}/{kind}/{rule}/{cell}[/{sampler}]{suffix}."""
    parts = [R, kind, rule, "{dataset}", "{schedule}", "{objective}", "seed{seed}"]
    if per_sampler:
        parts.append("{sampler}")
    return "/".join(parts) + suffix


def cell_of(wildcards):
    return Cell(
        wildcards.dataset, wildcards.schedule, wildcards.objective, int(wildcards.seed)
    )


def cell_file(cell, name):
    """`name` in the cell's own folder (cell_path filled in for one cell)."""
    return cell_path(name).format(
        dataset=cell.dataset,
        schedule=cell.schedule,
        objective=cell.objective,
        seed=cell.seed,
    )


def get_imported_checkpoint(wildcards):
    """An imported cell's checkpoint file (so editing or replacing it reruns the import); else none."""
    objective = STUDY.config["objectives"][wildcards.objective]
    return [objective["checkpoint"]] if objective["kind"] == "imported" else []


def get_train_spec(wildcards):
    return spec_json(STUDY.train_spec(cell_of(wildcards)))


def pack_path(name):
    """results/{study}/packs/{dataset}/{objective}/name: the folders of a dataset × objective's shared
    jobs: `members` of its packed training (training.pack), `evaluated/shard<i>` of its grouped evaluation.
    """
    return f"{R}/{layout.PACK}/{name}"


def dataset_objective(wildcards):
    """The name of a pack or evaluation group ("dataset/objective") from a packs/ path's wildcards."""
    return f"{wildcards.dataset}/{wildcards.objective}"


def get_pack_spec(wildcards):
    return spec_json(STUDY.pack_spec(dataset_objective(wildcards)))


def pack_folder(cell):
    """The output folder of the pack that trains `cell` (training.pack)."""
    return pack_path(layout.MEMBERS).format(
        dataset=cell.dataset, objective=cell.objective
    )


def trained_file(cell, name):
    """A cell's training output `name` (model.pt, train_log.jsonl): in its own folder, or in its
    pack's output folder when it is trained packed."""
    if STUDY.pack_of(cell) is None:
        return cell_file(cell, name)
    return f"{pack_folder(cell)}/{layout.member_dir(cell)}/{name}"


def trained_input(cell, name):
    """What a job that reads `trained_file(cell, name)` waits for: that file, or the pack's folder
    (files inside a directory output cannot be inputs themselves)."""
    return (
        trained_file(cell, name) if STUDY.pack_of(cell) is None else pack_folder(cell)
    )


def get_model(wildcards):
    return trained_input(cell_of(wildcards), "model.pt")


def model_file(wildcards):
    return trained_file(cell_of(wildcards), "model.pt")


def get_sample_spec(wildcards):
    return spec_json(STUDY.sample_spec(cell_of(wildcards), wildcards.sampler))


def get_evaluate_spec(wildcards):
    return spec_json(STUDY.eval_spec(cell_of(wildcards), wildcards.sampler))


def get_score_error_spec(wildcards):
    return spec_json(STUDY.eval_spec(cell_of(wildcards)))


def get_reference_spec(wildcards):
    return spec_json(STUDY.reference_spec(wildcards.dataset))


def get_reference(wildcards):
    """Image datasets are scored against their reference statistics; toys need none."""
    if STUDY.is_toy(wildcards.dataset):
        return []
    return [study_path(f"reference/{wildcards.dataset}/reference.json")]


def get_eval_pack_spec(wildcards):
    return spec_json(
        STUDY.eval_pack_spec(dataset_objective(wildcards), wildcards.shard)
    )


def eval_shard_cells(wildcards):
    return STUDY.eval_shard_cells(dataset_objective(wildcards), wildcards.shard)


def get_eval_pack_models(wildcards):
    """What an evaluation group's job waits for: its cells' model files, or their pack's folder."""
    return sorted({trained_input(c, "model.pt") for c in eval_shard_cells(wildcards)})


def eval_pack_model_files(wildcards):
    """The model file of each cell of an evaluation group's job (inside the pack's folder if packed)."""
    return [trained_file(c, "model.pt") for c in eval_shard_cells(wildcards)]


def evaluated_folder(cell):
    """The output folder of the evaluation job of a grouped toy cell (evaluation.group_size)."""
    return pack_path(f"{layout.EVALUATED}/{STUDY.eval_shard_of(cell)}").format(
        dataset=cell.dataset, objective=cell.objective
    )


def evaluated_file(cell, name):
    """A cell's sampling or evaluation output `name` (samples/x.npz, metrics/x.parquet): in its own
    folder, or in its evaluation group's folder when it is evaluated in a group."""
    if STUDY.eval_group_of(cell) is None:
        return cell_file(cell, name)
    return f"{evaluated_folder(cell)}/{layout.member_dir(cell)}/{name}"


def evaluated_input(cell, name):
    """What a job that reads `evaluated_file(cell, name)` waits for (the group's folder if grouped)."""
    if STUDY.eval_group_of(cell) is None:
        return evaluated_file(cell, name)
    return evaluated_folder(cell)


def metric_names():
    return ["metrics/score_error.parquet"] + [
        f"metrics/{s}.parquet" for s in STUDY.samplers
    ]


def sample_names():
    return [f"samples/{s}.npz" for s in STUDY.samplers]


def get_metric_tables(wildcards=None):
    return sorted({evaluated_input(c, n) for n in metric_names() for c in STUDY.cells})


def metric_table_files(wildcards=None):
    return [evaluated_file(c, n) for n in metric_names() for c in STUDY.cells]


def get_train_logs(wildcards=None):
    return sorted({trained_input(c, "train_log.jsonl") for c in STUDY.cells})


def train_log_files(wildcards=None):
    return [trained_file(c, "train_log.jsonl") for c in STUDY.cells]


def get_sample_files(wildcards=None):
    return sorted({evaluated_input(c, n) for n in sample_names() for c in STUDY.cells})


def get_real_images(wildcards=None):
    """Held-out images of each image dataset (written with its reference statistics), drawn beside its samples."""
    if not STUDY.samplers:
        return []
    return sorted(
        study_path(f"reference/{d}/real.npz")
        for d in STUDY.config["datasets"]
        if not STUDY.is_toy(d) and any(c.dataset == d for c in STUDY.cells)
    )


def sample_files(wildcards=None):
    return [evaluated_file(c, n) for n in sample_names() for c in STUDY.cells]


# The default figures this config can fill, and the paper figures the config's `figures:` block asks
# for (none by default); both chosen by the registry in scorebench/report/ from the config (a figure
# with nothing to show is not an output), each with its caption in workflow/report/.
FIGURES = declared_default_figures(STUDY)
PAPER_FIGURES = STUDY.paper_figures


def get_score_field_spec(wildcards):
    return spec_json(STUDY.score_field_spec(cell_of(wildcards)))


def get_study_figures_spec(wildcards=None):
    return spec_json(STUDY.study_figures_spec())


def get_score_field_files(wildcards=None):
    """Score fields of the 2-D toy cells, when a paper study draws score fields."""
    return [cell_file(c, "score_field.npz") for c in STUDY.field_cells]


def get_paper_sample_files(wildcards=None):
    """What the paper figures' job waits for of the samples, when a paper study draws samples."""
    return get_sample_files() if "samples" in STUDY.paper_inputs else []


def paper_sample_files(wildcards=None):
    return sample_files() if "samples" in STUDY.paper_inputs else []


def get_final_output():
    paper = []
    if STUDY.paper_studies:  # summary.md even when no paper figure can be filled
        paper = [
            study_path("summary.md"),
            *[study_path(f"figures/{f.shown}") for f in PAPER_FIGURES],
        ]
    return [
        study_path("metrics.parquet"),
        *[study_path(f"tables/{name}") for name in SUMMARY_TABLES],
        *[study_path(f"figures/{f.shown}") for f in FIGURES],
        *paper,
    ]


def check_site():
    """Stop, in one line and before any job, on a SLURM site profile's leftover placeholder or on
    more CPUs asked than the partition's nodes have (scorebench.slurm_site). In the main run only,
    not in the jobs that parse this file again on the cluster."""
    if str(workflow.exec_mode) != "default":
        return
    threads = {r.name: r.resources["_cores"].raw for r in workflow.rules}
    error = site_errors(workflow.resource_settings, threads)
    if error:
        sys.exit(f"scorebench: error: {error}")


def print_job_errors(snakemake_log):
    """Each failed job's log and its last error line (scorebench.failures), on stderr."""
    lines = job_errors(snakemake_log)
    if lines:
        print(
            "Failed jobs (log: last error line):", *lines, sep="\n  ", file=sys.stderr
        )
