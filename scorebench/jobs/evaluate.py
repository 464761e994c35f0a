"""Evaluation jobs: sample quality of a samples file, the score error and score field of a trained
cell, and the reference statistics an image dataset's FID/KID/PR are computed against."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from scorebench.clock import log_ready
from scorebench.components import Components
from scorebench.errors import ScorebenchError
from scorebench.readers import read_json, read_meta, read_npz
from scorebench.results import gpu_hours, provenance, tidy_rows, write_json, write_npz, write_table
from scorebench.seeds import derive_seed

log = logging.getLogger("scorebench")

# FID/KID need 2 samples, precision/recall more than their 3 neighbours; fewer finite samples give NaN rows
MIN_IMAGE_SAMPLES = 4
REAL_IMAGES = 64  # held-out images the samples figure shows beside each image dataset's samples
FIDELITY_ROWS = ("fid", "kid_mean", "kid_std", "precision", "recall", "f_score")


def read_samples(path):
    """(samples, the sample job's record) of a samples .npz."""
    arrays = read_npz(path, "samples file", require=("samples", "meta"))
    return arrays["samples"], read_meta(arrays, path, "samples file")


def evaluate_samples_job(spec: dict, samples_path, out_path, reference_dir=None) -> None:
    """Sample-quality metrics of one cell × sampler as tidy rows (toys: MMD/SWD/modes; images: torch-fidelity)."""
    import numpy as np
    import pandas as pd
    import torch

    samples, meta = read_samples(samples_path)
    dataset = Components(spec).dataset
    log_ready(log, "evaluation")
    t0 = time.perf_counter()
    x = torch.from_numpy(samples)
    ok = torch.isfinite(x.reshape(len(x), -1)).all(1)
    rows = [
        {"metric": "nfe", "value": float(meta["nfe"])},
        {"metric": "sample_wall_s", "value": float(meta["wall_s"])},
        {"metric": "nonfinite_fraction", "value": float((~ok).float().mean())},
    ]
    x = x[ok]
    g = torch.Generator().manual_seed(derive_seed(spec["seed"], "evaluate", spec["sampler"]["name"]))
    if dataset.kind == "toy":
        from scorebench.metrics.toy import toy_sample_metrics

        # the job already reports the non-finite share and passes only finite samples on
        rows += [r for r in toy_sample_metrics(x, dataset, generator=g) if r["metric"] != "nonfinite_fraction"]
    elif len(x) < MIN_IMAGE_SAMPLES:  # nothing to score: the share above says why, the metrics are NaN
        log.warning("only %d of %d samples are finite: FID/KID/PR are NaN", len(x), len(ok))
        extractor = spec["evaluation"]["extractor"]
        rows += [{"metric": m, "value": np.nan, "extractor": extractor} for m in FIDELITY_ROWS]
    else:
        rows += fidelity_rows(x.clamp(0, 1), reference_dir, spec["evaluation"])
    for r in rows:
        r.setdefault("region", "")
        r.setdefault("bin", -1)
        r.setdefault("sigma", np.nan)
        r.setdefault("se", np.nan)  # Monte-Carlo standard error: toy metrics bootstrap it (metrics/toy.py)
    extra = {
        **provenance(meta.get("device")),
        "eval_wall_s": time.perf_counter() - t0,
        "n_samples_used": int(ok.sum()),
        # what the sample job actually ran (jobs/sample.py): per chain, T per level, ε and its rule
        "sample_nfe": int(meta["nfe"]),
        "sample_steps_per_level": int(meta["steps_per_level"]),
        "sample_step_size": float(meta["step_size"]),
        "sample_step_rule": str(meta["step_rule"]),
        "sample_wall_s": float(meta["wall_s"]),
        "sample_gpu_hours": gpu_hours(meta["wall_s"], meta.get("device")),
    }
    write_table(pd.DataFrame(tidy_rows(rows, spec, extra)), out_path)


def score_error_sigmas(levels: list[float], ev: dict, *, images: bool) -> tuple[list, list, list]:
    """(own σ, common σ, the σ handed to the model for each) of one cell's score error.

    own: the cell's σ levels (a noiseless model: `noiseless_sigmas`). common: the study-wide
    `common_sigmas`, the same list for every cell, so cells with different schedules are compared
    at one σ. The model is queried at its trained level nearest in log σ (σ = 0 → its smallest
    level); a model trained without noise only knows σ = 0. Images drop σ = 0 (the empirical
    score exists only for σ > 0)."""
    noiseless = levels[-1] == 0
    own = [float(s) for s in (ev["noiseless_sigmas"] if noiseless else levels)]
    common = [float(s) for s in ev["common_sigmas"]]
    if images:
        own, common = [s for s in own if s > 0], [s for s in common if s > 0]

    def level_for(s: float) -> float:
        if noiseless:
            return 0.0
        if s <= 0:
            return float(min(levels))
        return float(min(levels, key=lambda lv: abs(math.log(lv) - math.log(s))))

    model = [0.0 if noiseless else s for s in own] + [level_for(s) for s in common]
    return own, common, model


def score_error_job(spec: dict, model_path, out_path) -> None:
    """Score error per σ level and per density bin of one cell, as tidy rows."""
    import pandas as pd
    import torch

    from scorebench.device import device_description
    from scorebench.metrics.score_error import score_error_rows
    from scorebench.models.loading import score_fn_on

    c = Components(spec)
    dataset, schedule = c.dataset, c.schedule
    model, ckpt = c.trained_model(model_path, spec["weights"])
    log_ready(log, "score error")
    ev = spec["evaluation"]
    own, common, model_sigmas = score_error_sigmas(schedule.sigmas.tolist(), ev, images=dataset.kind == "image")
    g = torch.Generator().manual_seed(derive_seed(spec["seed"], "score_error"))
    t0 = time.perf_counter()
    # one call: own and common σ share the evaluation points and their noise (common random numbers)
    rows = score_error_rows(
        score_fn_on(model, c.device), dataset, own + common, n_points=ev["n_points"], n_bins=ev["n_bins"],
        grid_size=ev["grid_size"], generator=g, model_sigmas=model_sigmas,
    )  # fmt: skip
    for r in rows:
        i = r["sigma_index"]
        r["sigma_set"], r["sigma_index"] = ("own", i) if i < len(own) else ("common", i - len(own))
    extra = {
        **provenance(device_description(c.device)),
        "eval_wall_s": time.perf_counter() - t0,
        "train_wall_s": float(ckpt.get("wall_s", float("nan"))),
        "train_gpu_hours": gpu_hours(ckpt.get("wall_s", 0.0), ckpt.get("device")),
        "train_steps": int(ckpt.get("step", 0)),
        "train_device": json.dumps(ckpt.get("device", {}), sort_keys=True, default=str),
    }
    write_table(pd.DataFrame(tidy_rows(rows, spec, extra)), out_path)


def score_field_job(spec: dict, model_path, out_path) -> dict:
    """A 2-D toy cell's score and the exact score on a uniform grid at each σ of its schedule, as an .npz.

    The grid is `metrics.score_error.evaluation_grid` (the training data's box plus 10 % margin);
    a noiseless cell is evaluated at σ = 0 only. Also stores the grid axes, a few training points
    and the cell's identity, so a figure needs nothing but the file.
    """
    import numpy as np

    from scorebench.metrics.score_error import evaluation_grid
    from scorebench.metrics.score_field import score_field
    from scorebench.models.loading import score_fn_on

    c = Components(spec)
    dataset, schedule = c.dataset, c.schedule
    model, _ = c.trained_model(model_path, spec["weights"])
    if dataset.kind != "toy" or dataset.dim != 2:
        raise ScorebenchError(f"score-field: dataset {spec['dataset']['name']!r} is not a 2-D toy (shape {dataset.shape})")
    size = int(spec["field"]["grid_size"])
    grid = evaluation_grid(dataset, size)
    sigmas = [float(s) for s in schedule.sigmas.tolist()]
    t0 = time.perf_counter()
    arrays = score_field(score_fn_on(model, c.device), dataset.distribution, grid, sigmas)
    cell = {k: spec[k]["name"] for k in ("dataset", "schedule", "objective")}
    meta = {**cell, "seed": int(spec["seed"]), "cell": spec["cell"], "weights": spec["weights"],
            "schedule_kind": spec["schedule"]["kind"], "objective_kind": spec["objective"]["kind"],
            "grid_size": size, "wall_s": time.perf_counter() - t0}  # fmt: skip
    write_npz(
        out_path, **arrays, points=grid.numpy(), axis_x=grid[::size, 0].numpy(), axis_y=grid[:size, 1].numpy(),
        train_points=dataset.train[:1000].numpy(), meta=np.array(json.dumps(meta)),
    )  # fmt: skip
    return meta


def reference_job(spec: dict, out_dir) -> None:
    """Per-dataset reference for FID/KID/PR: the feature network (trained here on the dataset's
    labelled training split unless Inception is used) and the cached reference features."""
    from scorebench.device import resolve_device
    from scorebench.metrics.feature_net import save_feature_net, train_feature_net
    from scorebench.metrics.fidelity import reference_features

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fid = spec["fid"]
    dataset = Components(spec).dataset
    name = spec["dataset"]["name"]
    info = {"dataset": name, "extractor": fid["extractor"], "cache_root": str(out_dir / "cache")}
    net_path = None
    if fid["extractor"] == "feature_net":
        if dataset.train_labels is None:
            raise ScorebenchError(
                f"evaluation.fid.extractor: feature_net needs class labels, and dataset {name!r} has none; "
                "use `extractor: inception` with `inception_weights: PATH`"
            )
        net = train_feature_net(
            dataset.to_unit(dataset.train), dataset.train_labels, name=name, steps=fid["feature_net_steps"],
            seed=derive_seed(0, "feature_net", name),
        )  # fmt: skip
        net_path = out_dir / "feature_net.pt"
        info["feature_net_sha256"] = save_feature_net(net, net_path)
        info["feature_net_path"] = str(net_path)
        info["feature_net_heldout_accuracy"] = float(net.info.get("heldout_accuracy", float("nan")))
    reference = dataset.to_unit(dataset.train[: fid["n_reference"]])  # images in [0, 1], as samples are written
    real = dataset.to_unit(dataset.test[:REAL_IMAGES]).cpu().numpy()  # held-out images drawn beside the samples
    write_npz(out_dir / "real.npz", samples=real)
    info["n_reference"] = int(reference.shape[0])
    info["cache_name"] = reference_features(
        reference, cache_root=out_dir / "cache", cache_name=name, extractor=fid["extractor"],
        feature_net_path=net_path, inception_weights=fid["inception_weights"],
        device=resolve_device("auto"),
    )  # fmt: skip
    write_json(out_dir / "reference.json", info)


def fidelity_rows(samples, reference_dir, fid: dict) -> list[dict]:
    """FID/KID/PR of image samples in [0, 1] against a dataset's cached reference (reference_job)."""
    from scorebench.device import resolve_device
    from scorebench.metrics.fidelity import fidelity_metrics

    if reference_dir is None:
        raise ScorebenchError("evaluate: image datasets need --reference (the reference-stats folder)")
    ref = read_json(Path(reference_dir) / "reference.json", "reference record")
    return fidelity_metrics(
        samples, ref["cache_name"], cache_root=ref["cache_root"], extractor=ref["extractor"],
        feature_net_path=ref.get("feature_net_path"), inception_weights=fid["inception_weights"],
        device=resolve_device("auto"),
    )  # fmt: skip
