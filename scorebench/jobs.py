"""One function per workflow job: a spec (from study.py) and paths in, files out.

The command line (cli.py) parses arguments and calls these; the Snakemake rules call the command
line. Each job builds its components through study.py, runs the lower layers, and writes its
outputs atomically, so a killed job leaves either nothing or a finished file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from scorebench import study as st
from scorebench.errors import ScorebenchError
from scorebench.results import provenance, tidy_rows, write_json, write_npz, write_table, write_text

log = logging.getLogger("scorebench")


def derive_seed(seed: int, *names: str) -> int:
    """A seed for one purpose of a cell (benchopt's habit): the cell seed plus what it is for."""
    digest = hashlib.sha256(":".join([str(int(seed)), *names]).encode()).digest()
    return int.from_bytes(digest[:7], "little")


# ---------------------------------------------------------------------- train


def train_job(spec: dict, out_dir) -> dict:
    """Train one cell (or write the oracle's marker) into out_dir/model.pt; resumes a killed run."""
    from scorebench.checkpoint import save_atomic
    from scorebench.device import device_description, resolve_device
    from scorebench.train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = st.build_dataset(spec)
    schedule = st.build_schedule(spec, dataset)
    log.info("cell %s: dataset %s %s, %d σ levels", spec["cell"], dataset.name, dataset.shape, schedule.levels)
    if st.is_oracle(spec):
        device = resolve_device(spec["training"].get("device", "auto"))
        save_atomic(
            {
                "model_config": {"arch": "oracle"},
                "step": 0,
                "sigmas": schedule.sigmas,
                "wall_s": 0.0,
                "device": device_description(device),
            },
            out_dir / "model.pt",
        )
        (out_dir / "train_log.jsonl").write_text("")
        return {"step": 0, "wall_s": 0.0}
    model = st.build_model(spec, dataset, schedule)
    loss_fn = st.build_loss(spec)
    settings = st.train_settings(spec)
    discard_foreign_checkpoint(out_dir, spec)
    result = train(model, loss_fn, dataset.train, schedule, settings, out_dir)
    return {"step": result.step, "wall_s": result.wall_s}


def discard_foreign_checkpoint(out_dir: Path, spec: dict) -> None:
    """Keep a resume checkpoint only if it was made for this very spec.

    Snakemake reruns a cell's training when its spec changes (a preset edit); the checkpoint left by
    the old spec then belongs to another experiment and must not be resumed. The spec's hash is
    stamped beside the checkpoint when training starts.
    """
    ckpt, stamp = out_dir / "checkpoint.pt", out_dir / "checkpoint.spec"
    digest = hashlib.sha256(st.spec_json(spec).encode()).hexdigest()
    if ckpt.exists() and (not stamp.exists() or stamp.read_text().strip() != digest):
        log.warning("discarding %s: it was made for different settings; training starts from step 0", ckpt)
        ckpt.unlink()
    write_text(stamp, digest + "\n")


def load_score_model(spec: dict, model_path, dataset, schedule, *, weights: str = "ema", device="cpu"):
    """The trained score network of a cell (EMA or raw weights), in eval mode on `device`."""
    from scorebench.checkpoint import load_checkpoint
    from scorebench.models import model_from_config
    from scorebench.models.oracle import OracleScore

    ckpt = load_checkpoint(model_path, expect_keys=("model_config",))
    config = ckpt["model_config"]
    if config.get("arch") == "oracle":
        model = OracleScore(dataset.distribution)
    else:
        model = model_from_config(config)
        key = "ema" if weights == "ema" and ckpt.get("ema") is not None else "model"
        try:
            model.load_state_dict(ckpt[key])
        except (RuntimeError, KeyError) as exc:
            raise ScorebenchError(f"checkpoint {model_path}: does not fit its model config ({exc})") from None
    return model.to(device).eval(), ckpt


# ---------------------------------------------------------------------- sample


def load_cell_model(spec: dict, model_path, weights: str):
    """What every job after training starts from: device, dataset, schedule and the cell's score model.

    Returns:
        (device, dataset, schedule, model in eval mode on device, the model file's dict)
    """
    from scorebench.device import resolve_device

    device = resolve_device(spec["training"].get("device", "auto"))
    dataset = st.build_dataset(spec)
    schedule = st.build_schedule(spec, dataset)
    model, ckpt = load_score_model(spec, model_path, dataset, schedule, weights=weights, device=device)
    return device, dataset, schedule, model, ckpt


def score_fn_on(model, device):
    """`score_fn(x, σ)` for samplers and metrics: the model runs on its device without gradients, in
    float32, and the score comes back where x lives, in x's dtype."""
    import torch

    def score_fn(x, s):
        with torch.no_grad():
            out = model(x.to(device, torch.float32), s.to(device, torch.float32))
        return out.to(x.device, x.dtype)

    return score_fn


def gpu_hours(wall_s: float, device: dict | None) -> float:
    """Wall hours spent on a GPU (0 on a CPU): the cost column a cluster user budgets with."""
    return float(wall_s) / 3600.0 if (device or {}).get("type") == "cuda" else 0.0


def initial_points(dataset, n: int, *, kind: str, sigma_max: float, generator, device):
    """Where chains start: N(0, σ_1²) for pc (the VE SDE prior); else uniform over [0, 1] for images
    (NCSN) and over the training data's bounding box (+20 % margin) for toys."""
    from scorebench.sampling import initial_samples

    if kind == "pc" and sigma_max > 0:
        return initial_samples(dataset.shape, n, "gaussian", sigma=sigma_max, generator=generator, device=device)
    u = initial_samples(dataset.shape, n, "uniform", generator=generator, device=device)
    if dataset.kind == "image":
        return u
    lo = dataset.train.min(0).values.to(device)
    hi = dataset.train.max(0).values.to(device)
    pad = 0.2 * (hi - lo)
    return (lo - pad) + (hi - lo + 2 * pad) * u


def sample_job(spec: dict, model_path, out_path) -> dict:
    """Draw `sampling.n_samples` samples for one cell and sampler into an .npz (samples in data units)."""
    import numpy as np
    import torch

    from scorebench.device import device_description
    from scorebench.sampling import get_sampler

    sampling, sampler = spec["sampling"], spec["sampler"]
    device, dataset, schedule, model, _ = load_cell_model(spec, model_path, sampling["weights"])
    run = get_sampler(sampler["kind"])
    eps = st.step_size(sampler, schedule)
    sigmas = schedule.sigmas.to(device=device, dtype=torch.float32)
    g = torch.Generator(device).manual_seed(derive_seed(spec["seed"], "sample", sampler["name"]))
    score_fn = score_fn_on(model, device)
    n, batch = int(sampling["n_samples"]), int(sampling["batch_size"])
    opts = {"snr": sampler["snr"]} if sampler["kind"] == "pc" else {}
    chunks, nfe, snaps = [], 0, []
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        m = min(batch, n - start)
        x0 = initial_points(dataset, m, kind=sampler["kind"], sigma_max=float(sigmas[0]), generator=g, device=device)
        every = 0
        if start == 0 and sampling.get("snapshots", 0) > 0:
            total = schedule.levels * max(1, sampler["n_steps"])
            every = max(1, total // int(sampling["snapshots"]))
        out = run(
            score_fn, x0, sigmas, n_steps=sampler["n_steps"], step_size=eps, generator=g,
            snapshot_every=every, denoise=sampler["denoise"], **opts,
        )  # fmt: skip
        chunks.append(out.samples.float().cpu())
        nfe = out.nfe
        if start == 0:
            snaps = out.snapshots
        log.info("sampled %d/%d", start + m, n)
    wall = time.perf_counter() - t0
    samples = torch.cat(chunks).numpy()
    finite = np.isfinite(samples).all(axis=tuple(range(1, samples.ndim)))
    meta = {
        "nfe": int(nfe), "step_size": eps, "wall_s": wall, "n_samples": n, "n_nonfinite": int((~finite).sum()),
        "device": device_description(device),
    }  # fmt: skip
    arrays = {"samples": samples, "meta": np.array(json.dumps(meta))}
    if snaps:
        arrays["snapshots"] = np.stack([s[2][:256].float().numpy() for s in snaps])
        arrays["snapshot_level"] = np.array([s[0] for s in snaps])
        arrays["snapshot_step"] = np.array([s[1] for s in snaps])
    write_npz(out_path, **arrays)
    return meta


def read_samples(path):
    import numpy as np

    try:
        with np.load(path) as z:
            return z["samples"], json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ScorebenchError(f"samples file {path} is unreadable ({exc}); delete it to resample") from None


# ---------------------------------------------------------------------- evaluate


def evaluate_samples_job(spec: dict, samples_path, out_path, reference_dir=None) -> None:
    """Sample-quality metrics of one cell × sampler as tidy rows (toys: MMD/SWD/modes; images: torch-fidelity)."""
    import numpy as np
    import pandas as pd
    import torch

    samples, meta = read_samples(samples_path)
    dataset = st.build_dataset(spec)
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
    else:
        rows += fidelity_rows(x.clamp(0, 1), reference_dir, spec["evaluation"])
    for r in rows:
        r.setdefault("region", "")
        r.setdefault("bin", -1)
        r.setdefault("sigma", np.nan)
    extra = {
        **provenance(meta.get("device")),
        "eval_wall_s": time.perf_counter() - t0,
        "n_samples_used": int(ok.sum()),
        "sample_wall_s": float(meta["wall_s"]),
        "sample_gpu_hours": gpu_hours(meta["wall_s"], meta.get("device")),
    }
    write_table(pd.DataFrame(tidy_rows(rows, spec, extra)), out_path)


def score_error_job(spec: dict, model_path, out_path) -> None:
    """Score error per σ level and per density bin of one cell, as tidy rows."""
    import pandas as pd
    import torch

    from scorebench.device import device_description
    from scorebench.metrics.score_error import score_error_rows

    device, dataset, schedule, model, ckpt = load_cell_model(spec, model_path, spec["weights"])
    ev = spec["evaluation"]
    noiseless = bool(schedule.sigmas[-1] == 0)
    sigmas = [float(s) for s in (ev["noiseless_sigmas"] if noiseless else schedule.sigmas.tolist())]
    if dataset.kind == "image":
        sigmas = [s for s in sigmas if s > 0]  # the empirical score exists only for σ > 0
    g = torch.Generator().manual_seed(derive_seed(spec["seed"], "score_error"))
    t0 = time.perf_counter()
    model_sigmas = [0.0] * len(sigmas) if noiseless else None  # a noiseless model only knows σ = 0
    rows = score_error_rows(
        score_fn_on(model, device), dataset, sigmas, n_points=ev["n_points"], n_bins=ev["n_bins"], grid_size=ev["grid_size"],
        generator=g, model_sigmas=model_sigmas,
    )  # fmt: skip
    extra = {
        **provenance(device_description(device)),
        "eval_wall_s": time.perf_counter() - t0,
        "train_wall_s": float(ckpt.get("wall_s", float("nan"))),
        "train_gpu_hours": gpu_hours(ckpt.get("wall_s", 0.0), ckpt.get("device")),
        "train_steps": int(ckpt.get("step", 0)),
        "train_device": json.dumps(ckpt.get("device", {}), sort_keys=True, default=str),
    }
    write_table(pd.DataFrame(tidy_rows(rows, spec, extra)), out_path)


def score_field(score_fn, distribution, grid, sigmas, model_sigmas=None, *, chunk_size: int = 4096) -> dict:
    """A score model and the exact score on the same grid points, at each σ (for quiver figures).

    Song & Ermon (2019, Fig. 2) compare ∇ₓ log p_data with s_θ over the plane to show that a
    model trained on clean data is wrong where data is scarce; this gives the arrays for that
    picture at any σ.

    Args:
        score_fn: `score_fn(x, sigma_batch)` in eval mode (called under no_grad, in chunks).
        distribution: an `IsotropicGaussianMixture` (the truth: log p_σ and ∇log p_σ in closed form).
        grid: (N, *shape) float32 points.
        sigmas: σ of each true density p_σ.
        model_sigmas: σ handed to the model for each entry (None: the same σ; 0 for a noiseless model).
        chunk_size: points per model call.

    Returns:
        dict of numpy arrays: sigmas (K,), model_sigmas (K,), model_score and true_score (K, N, *shape)
        float32, log_prob (K, N) float64 (log p_σ) and log_prob0 (N,) (log p_0, the data density).
    """
    import numpy as np
    import torch

    sig = [float(s) for s in sigmas]
    msig = sig if model_sigmas is None else [float(s) for s in model_sigmas]
    if len(msig) != len(sig):
        raise ScorebenchError(f"score field model_sigmas: need {len(sig)} values (one per σ), got {len(msig)}")
    x = grid.detach().to(torch.float32)
    est, true, logp = [], [], []
    with torch.no_grad():
        for s, ms in zip(sig, msig):
            parts = []
            for chunk in x.split(int(chunk_size)):
                out = score_fn(chunk, torch.full((chunk.shape[0],), ms, dtype=torch.float32, device=chunk.device))
                if tuple(out.shape) != tuple(chunk.shape):
                    raise ScorebenchError(
                        f"score field: the model returned shape {tuple(out.shape)} for inputs {tuple(chunk.shape)}"
                    )
                parts.append(out.float().cpu())
            lp, sc = distribution.log_prob_and_score(x.to(torch.float64), s)
            est.append(torch.cat(parts).numpy())
            true.append(sc.to(torch.float32).cpu().numpy())
            logp.append(lp.cpu().numpy())
    return {
        "sigmas": np.array(sig, dtype=np.float64),
        "model_sigmas": np.array(msig, dtype=np.float64),
        "model_score": np.stack(est),
        "true_score": np.stack(true),
        "log_prob": np.stack(logp),
        "log_prob0": distribution.log_prob(x.to(torch.float64), 0.0).cpu().numpy(),
    }


def score_field_job(spec: dict, model_path, out_path) -> dict:
    """A 2-D toy cell's score and the exact score on a uniform grid at each σ of its schedule, as an .npz.

    The grid is `metrics.score_error.evaluation_grid` (the training data's box plus 10 % margin);
    a noiseless cell is evaluated at σ = 0 only. Also stores the grid axes, a few training points
    and the cell's identity, so a figure needs nothing but the file.
    """
    import numpy as np

    from scorebench.metrics.score_error import evaluation_grid

    device, dataset, schedule, model, _ = load_cell_model(spec, model_path, spec["weights"])
    if dataset.kind != "toy" or dataset.dim != 2:
        raise ScorebenchError(f"score-field: dataset {spec['dataset']['name']!r} is not a 2-D toy (shape {dataset.shape})")
    size = int(spec["field"]["grid_size"])
    grid = evaluation_grid(dataset, size)
    sigmas = [float(s) for s in schedule.sigmas.tolist()]
    t0 = time.perf_counter()
    arrays = score_field(score_fn_on(model, device), dataset.distribution, grid, sigmas)
    cell = {k: spec[k]["name"] for k in ("dataset", "schedule", "objective")}
    meta = {**cell, "seed": int(spec["seed"]), "cell": spec["cell"], "weights": spec["weights"],
            "schedule_kind": spec["schedule"]["kind"], "objective_kind": spec["objective"]["kind"],
            "grid_size": size, "wall_s": time.perf_counter() - t0}  # fmt: skip
    write_npz(
        out_path, **arrays, points=grid.numpy(), axis_x=grid[::size, 0].numpy(), axis_y=grid[:size, 1].numpy(),
        train_points=dataset.train[:1000].numpy(), meta=np.array(json.dumps(meta)),
    )  # fmt: skip
    return meta


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
        if ds_spec["kind"] not in st.TOY_KINDS:
            continue
        dataset = st.build_dataset({"dataset": ds_spec})
        dist = dataset.distribution
        if ds_spec["kind"] in st.MIXTURE_KINDS:
            mixtures[name] = {"means": dist.means.tolist(), "stds": dist.stds.tolist(), "weights": dist.weights.tolist()}
        for sch_name, sch in spec["schedules"].items():
            sigmas[(name, sch_name)] = st.build_schedule({"schedule": sch}, dataset).sigmas.tolist()
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


def reference_job(spec: dict, out_dir) -> None:
    """Per-dataset reference for FID/KID/PR: the feature network (trained here on the dataset's
    labelled training split unless Inception is used) and the cached reference features."""
    from scorebench.device import resolve_device
    from scorebench.metrics.feature_net import save_feature_net, train_feature_net
    from scorebench.metrics.fidelity import reference_features

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fid = spec["fid"]
    dataset = st.build_dataset(spec)
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
            dataset.train, dataset.train_labels, name=name, steps=fid["feature_net_steps"],
            seed=derive_seed(0, "feature_net", name),
        )  # fmt: skip
        net_path = out_dir / "feature_net.pt"
        info["feature_net_sha256"] = save_feature_net(net, net_path)
        info["feature_net_path"] = str(net_path)
        info["feature_net_heldout_accuracy"] = float(net.info.get("heldout_accuracy", float("nan")))
    reference = dataset.train[: fid["n_reference"]]
    info["n_reference"] = int(reference.shape[0])
    info["cache_name"] = reference_features(
        reference, cache_root=out_dir / "cache", cache_name=name, extractor=fid["extractor"],
        feature_net_path=net_path, inception_weights=fid.get("inception_weights"),
        device=resolve_device("auto"),
    )  # fmt: skip
    write_json(out_dir / "reference.json", info)


def fidelity_rows(samples, reference_dir, fid: dict) -> list[dict]:
    """FID/KID/PR of image samples in [0, 1] against a dataset's cached reference (reference_job)."""
    from scorebench.device import resolve_device
    from scorebench.metrics.fidelity import fidelity_metrics

    if reference_dir is None:
        raise ScorebenchError("evaluate: image datasets need --reference (the reference-stats folder)")
    ref_file = Path(reference_dir) / "reference.json"
    try:
        ref = json.loads(ref_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ScorebenchError(f"reference file {ref_file} is unreadable ({exc}); rerun reference_stats") from None
    return fidelity_metrics(
        samples, ref["cache_name"], cache_root=ref["cache_root"], extractor=ref["extractor"],
        feature_net_path=ref.get("feature_net_path"), inception_weights=fid.get("inception_weights"),
        device=resolve_device("auto"),
    )  # fmt: skip
