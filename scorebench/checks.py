"""Settings that cannot finish, refused when a config is read: one line each, naming the key path.

The schema (scorebench/schemas/config.schema.yaml) checks each value alone; this module checks what
a value means for the jobs: a σ that overflows float32, a sampler that would run for 200,001 network
evaluations per chain, a feature network that needs labels the dataset lacks, a data file that is
not there. Each of these once passed `snakemake -n` and failed only after training had run.

Why float32 bounds σ: training and sampling compute in float32 (bf16 on CUDA has the same exponent
range). The squared norms of the noise and of the denoising target, ‖σz‖² ≈ D·σ² and ‖z/σ‖² ≈ D/σ²,
must stay finite for any data dimension the package loads (up to 2^20), with a factor 4 to spare
for rounding and the spread of ‖z‖², so every σ must lie in [1/SIGMA_LIMIT, SIGMA_LIMIT] with
SIGMA_LIMIT = sqrt(float32 max / (4 · 2^20)) ≈ 9.0e15. Measured on a 2-D mixture (30 DSM steps):
σ_max = 1e18 trains with loss 1e33; 1e20 and 1e30 diverge at step 1. The bound needs
no data (a bound relative to the data's scale would need the data loaded, as `sigma_max: auto`
does), so it refuses only what overflows, not every σ_max far above the data's diameter.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from scorebench.budgets import (
    nfe_per_chain, relaxation, resolve_step_size, schedule_sigma_min, schedule_sigmas, steps_per_level,
)  # fmt: skip
from scorebench.data.registry import (
    IMAGE_DATASETS, LABELLED_DATASETS, data_variance, dataset_dim, has_images, npz_image_shape,
)  # fmt: skip
from scorebench.errors import ScorebenchError
from scorebench.results import schedule_n_levels

log = logging.getLogger("scorebench")

FLOAT32_MAX = 3.4028234663852886e38
MAX_DIM = 2**20  # the largest data dimension the σ bound allows for (a 3 × 512 × 512 image is 786,432)
SIGMA_LIMIT = math.sqrt(FLOAT32_MAX / (4 * MAX_DIM))


def refuse(where: str, why: str):
    raise ScorebenchError(f"config {where}: {why}")


def check_config(config: dict) -> None:
    """Preset checks that need no grid: numbers finite, σ lists well formed and within float32's
    range, dataset options that a loader would refuse, exclude rules that name real presets."""
    _check_finite(config, "")
    for name, sch in config["schedules"].items():
        _check_schedule(f"schedules/{name}", sch)
    for name, ds in config["datasets"].items():
        dim = ds["options"].get("dim")
        if ds["kind"] == "gmm_nd" and dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            refuse(f"datasets/{name}/options/dim", f"must be an integer >= 1, got {dim!r}")
    for i, rule in enumerate(config["exclude"]):
        for key, table in (("dataset", "datasets"), ("schedule", "schedules"), ("objective", "objectives")):
            if key in rule and rule[key] not in config[table]:
                refuse(f"exclude/{i}/{key}", f"{rule[key]!r} is not a preset in `{table}`")


def _check_finite(value, where: str) -> None:
    """Every number of the config is finite (YAML's .inf and .nan are numbers to a schema)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _check_finite(sub, f"{where}/{key}" if where else str(key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _check_finite(sub, f"{where}/{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        refuse(where, f"must be a finite number, got {value}")


def _check_schedule(where: str, sch: dict) -> None:
    kind = sch["kind"]
    need = {"single": ["sigma"], "geometric": ["sigma_max", "sigma_min", "levels"],
            "linear": ["sigma_max", "sigma_min", "levels"], "explicit": ["sigmas"]}.get(kind, [])  # fmt: skip
    for key in need:
        if key not in sch:
            refuse(f"{where}/{key}", f"required for kind {kind!r}")
    if kind in ("geometric", "linear") and sch["sigma_max"] != "auto" and not sch["sigma_max"] > sch["sigma_min"]:
        refuse(where, f"sigma_max ({sch['sigma_max']}) must be larger than sigma_min ({sch['sigma_min']})")
    if kind == "explicit":
        s = sch["sigmas"]
        if not s or any(v <= 0 for v in s) or any(b >= a for a, b in zip(s, s[1:])):
            refuse(f"{where}/sigmas", f"must be positive and strictly decreasing, got {s}")
    sigmas = {key: sch[key] for key in ("sigma", "sigma_max", "sigma_min") if isinstance(sch.get(key), (int, float))}
    if "sigmas" in sch:
        sigmas.update({f"sigmas/{i}": v for i, v in enumerate(sch["sigmas"])})
    for key, v in sigmas.items():
        if not 1 / SIGMA_LIMIT <= v <= SIGMA_LIMIT:
            refuse(
                f"{where}/{key}",
                f"{v:g} is outside float32's range for σ, [{1 / SIGMA_LIMIT:.1e}, {SIGMA_LIMIT:.1e}]: the loss "
                "squares σ·z and z/σ, which then overflow (see scorebench/checks.py)",
            )


def check_study(study) -> None:
    """Checks over the datasets and schedules that have cells: feature-network labels, data files, budgets."""
    config = study.config
    datasets = sorted({c.dataset for c in study.cells})
    for name in datasets:
        ds = config["datasets"][name]
        _check_files(f"datasets/{name}", ds)
        if ds["kind"] in IMAGE_DATASETS and ds["kind"] not in LABELLED_DATASETS:
            if config["evaluation"]["fid"]["extractor"] == "feature_net":
                refuse(
                    "evaluation/fid/extractor",
                    f"feature_net trains on class labels, but dataset {name} (kind {ds['kind']}) has none; "
                    "use `extractor: inception` (with `inception_weights: PATH` offline) or exclude its cells",
                )
    for name in sorted({c.objective for c in study.cells}):
        obj = config["objectives"][name]
        if obj["kind"] == "imported" and not Path(obj["checkpoint"]).is_file():
            refuse(f"objectives/{name}/checkpoint", f"{obj['checkpoint']}: file not found")
    _check_budgets(study, datasets)
    check_relaxation(study)


def _check_files(where: str, ds: dict) -> None:
    """The data files of npz and image_folder presets exist and look right (headers only)."""
    kind, options = ds["kind"], ds["options"]
    if kind not in ("npz", "image_folder"):
        return
    if "path" not in options:
        refuse(f"{where}/options/path", f"required for kind {kind} (the {'.npz file' if kind == 'npz' else 'image folder'})")
    path = options["path"]
    if kind == "npz":
        try:
            npz_image_shape(path)
        except ValueError as exc:
            refuse(f"{where}/options/path", f"npz {exc}")
    else:
        from pathlib import Path

        if not Path(path).is_dir():
            refuse(f"{where}/options/path", f"image_folder {path}: folder not found")
        if not has_images(path):
            refuse(f"{where}/options/path", f"image_folder {path}: no .png/.jpg/.jpeg files found (searched recursively)")


def _check_budgets(study, datasets) -> None:
    """Sampling budgets within `limits`: steps per level that a `nfe_budget` leaves, evaluations per
    chain, memory of one sample job's arrays."""
    from scorebench.jobs.sample import SNAPSHOT_CHAINS  # a fact of the sample job: chains kept per snapshot

    config = study.config
    limits, sampling = config["limits"], config["sampling"]
    for d_name, sch_name, s_name, smp in _sampler_cases(study):
        levels = schedule_n_levels(config["schedules"][sch_name])
        if levels is None:  # ncsnv2 derives L from the data (the sample job refuses a budget too small for it)
            continue
        T = steps_per_level(smp["kind"], levels, smp["n_steps"], smp["nfe_budget"], smp["denoise"])
        if T < 1 and smp["nfe_budget"] is not None:
            refuse(
                f"{_sampler_where(config, d_name, s_name)}/nfe_budget",
                f"{smp['nfe_budget']:,} evaluations per chain leave T = {T} steps per level with schedule {sch_name} "
                f"(L = {levels}{', denoise' if smp['denoise'] else ''}); raise nfe_budget to at least "
                f"{nfe_per_chain(smp['kind'], levels, 1, smp['denoise']):,} or set it to null and use n_steps",
            )
        nfe = nfe_per_chain(smp["kind"], levels, T, smp["denoise"])
        if nfe > limits["max_nfe"]:
            refuse(
                _sampler_where(config, d_name, s_name),
                f"with schedule {sch_name} (L = {levels}, T = {T}) one chain takes {nfe:,} network "
                f"evaluations, above limits/max_nfe = {limits['max_nfe']:,}",
            )
    n = sampling["n_samples"]
    for name in datasets:
        ds = config["datasets"][name]
        dim = dataset_dim(ds["kind"], ds["options"])
        if dim is None:
            continue
        gb = (n + sampling["snapshots"] * min(n, SNAPSHOT_CHAINS)) * dim * 4 / 1e9
        if gb > limits["max_samples_gb"]:
            refuse(
                "sampling/n_samples",
                f"{n:,} samples (and {sampling['snapshots']} snapshots) of dataset {name} (D = {dim:,}) take "
                f"{gb:.1f} GB in float32, above limits/max_samples_gb = {limits['max_samples_gb']}",
            )


def _sampler_cases(study):
    """(dataset, schedule, sampler name, sampler settings) for every dataset × schedule with cells and
    every sampler, the settings with the dataset's overrides (`datasets/D/sampling/samplers`)."""
    pairs = sorted({(c.dataset, c.schedule) for c in study.cells})
    for d_name, sch_name in pairs:
        for s_name in study.samplers:
            yield d_name, sch_name, s_name, study.sampler_settings(d_name, s_name)


def _sampler_where(config: dict, dataset: str, sampler: str) -> str:
    """The key path of a sampler preset as a dataset's cells see it: its override if it has one."""
    if sampler in config["datasets"][dataset]["sampling"]["samplers"]:
        return f"datasets/{dataset}/sampling/samplers/{sampler} (over sampling/samplers/{sampler})"
    return f"sampling/samplers/{sampler}"


FROZEN_RELAXATION = 0.05  # R below this: refused (the chain cannot move over the data's scale)
SLOW_RELAXATION = 1.0  # R below this: a warning (the chain relaxes by less than one e-fold)


def check_relaxation(study) -> None:
    """Refuse a sampler that cannot move over the data's scale; warn about one that barely does.

    For each dataset × schedule with cells and each sampler (with the dataset's overrides), R =
    Σ_i T·α_i/(σ_i² + s²) (scorebench/budgets.py `relaxation`): the e-folds by which the chains' mean
    displacement relaxes over the data's per-coordinate variance s². R < FROZEN_RELAXATION (0.05) is
    refused, R < SLOW_RELAXATION (1) logged as a warning. Skipped where a fact needs the data: s² of
    image datasets (registry `data_variance` None), σ lists of kind ncsnv2 and of `sigma_max: auto`
    (plain langevin there still needs only σ_L, which the preset fixes).
    """
    config = study.config
    for d_name, sch_name, s_name, smp in _sampler_cases(study):
        ds, sch = config["datasets"][d_name], config["schedules"][sch_name]
        variance = data_variance(ds["kind"], ds["options"])
        sigmas = schedule_sigmas(sch)
        if sigmas is None and smp["kind"] == "langevin" and schedule_sigma_min(sch) is not None:
            sigmas = [schedule_sigma_min(sch)]  # plain Langevin runs at σ_L only
        if variance is None or sigmas is None:
            continue
        T = steps_per_level(smp["kind"], len(sigmas), smp["n_steps"], smp["nfe_budget"], smp["denoise"])
        eps, rule = resolve_step_size(smp, sigmas, T)
        r = relaxation(smp, sigmas, T, eps, variance)
        what = (
            f"with schedule {sch_name} on dataset {d_name} the chains relax by R = {r:.3g} e-folds over the "
            f"data's scale (T = {T} steps per level, ε = {eps:.3g} by rule {rule}, data variance {variance:.3g})"
        )
        if r < FROZEN_RELAXATION:
            refuse(
                _sampler_where(config, d_name, s_name),
                f"{what}, below {FROZEN_RELAXATION}: the chain cannot move over the data's scale; raise "
                f"{'step_size/noiseless_step_size' if rule == 'noiseless' else 'step_size/step_ratio'} or n_steps/nfe_budget",
            )
        if r < SLOW_RELAXATION:
            log.warning("config %s: %s, below %s: the samples may still remember where the chains started",
                        _sampler_where(config, d_name, s_name), what, SLOW_RELAXATION)  # fmt: skip
