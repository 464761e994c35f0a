"""One function per workflow job: a spec (from study.py) and paths in, files out.

The command line (cli.py) parses arguments and calls these; the Snakemake rules call the command
line. Each job builds its components through study.py, runs the lower layers, and writes its
outputs atomically, so a killed job leaves either nothing or a finished file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from scorebench import study as st
from scorebench.clock import log_ready
from scorebench.errors import ScorebenchError
from scorebench.results import atomic_path, provenance, tidy_rows, write_json, write_npz, write_table, write_text

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
    log_ready(log, "training")
    result = train(model, loss_fn, dataset.train, schedule, settings, out_dir)
    return {"step": result.step, "wall_s": result.wall_s}


def train_pack_job(spec: dict, out_dir, resume_dir) -> dict:
    """Train the members of a pack (Study.pack_spec) in one process into out_dir/{member}/ (model.pt,
    train_log.jsonl each); the resume checkpoint lives in `resume_dir`, outside the job's output, so a
    killed job resumes from it."""
    from scorebench.packed import PackMember, train_packed

    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    specs = spec["members"]
    first = next(iter(specs.values()))
    dataset = st.build_dataset(first)
    members = []
    for member_dir, m in specs.items():
        schedule = st.build_schedule(m, dataset)
        model = st.build_model(m, dataset, schedule)
        members.append(PackMember(m["cell"], model, schedule, st.train_settings(m), out_dir / member_dir))
    discard_foreign_checkpoint(resume_dir, spec)
    log.info("pack %s: %d cells on %s %s", spec["pack"], len(members), dataset.name, dataset.shape)
    log_ready(log, "training")
    return train_packed(
        members, st.build_loss(first), dataset.train, resume_dir / "checkpoint.pt",
        pack_name=spec["pack"], noise_seed=derive_seed(first["seed"], spec["pack"], "noise"),
    )  # fmt: skip


def evaluate_pack_job(spec: dict, model_files, out_dir, work_dir, reference_dir=None) -> None:
    """Sample, evaluate and score-error every cell of one evaluation job of a group (Study.eval_pack_spec)
    in one process: out_dir/{member}/samples/{sampler}.npz, metrics/{sampler}.parquet and
    metrics/score_error.parquet, each made by the per-cell job's function from the per-cell job's spec.

    `model_files` are the members' model.pt files, in any order: each is matched to its member by
    its path (a cell's own folder or its pack's). Files are made in `work_dir` (not an output, so a
    failed job's finished files survive) and each is stamped with a digest of its spec and source; a
    rerun keeps the files whose stamp still matches. When all are made, `work_dir` becomes `out_dir`
    in one rename.
    """
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    members = spec["members"]
    models = _member_models(model_files, members)
    log.info("evaluating %d cells of group %s (%s)", len(members), spec["group"], spec["shard"])
    for i, (member, m) in enumerate(members.items()):
        model, cell = models[member], work_dir / member
        for sampler, sample_spec in m["sample"].items():
            samples = cell / "samples" / f"{sampler}.npz"
            _made_once(samples, sample_spec, model, lambda: sample_job(sample_spec, model, samples))
            table, eval_spec = cell / "metrics" / f"{sampler}.parquet", m["evaluate"][sampler]
            _made_once(table, eval_spec, samples, lambda: evaluate_samples_job(eval_spec, samples, table, reference_dir))
        table = cell / "metrics" / "score_error.parquet"
        _made_once(table, m["score_error"], model, lambda: score_error_job(m["score_error"], model, table))
        log.info("cell %d/%d of %s %s done: %s", i + 1, len(members), spec["group"], spec["shard"], member)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir.replace(out_dir)


def _member_models(model_files, members) -> dict[str, Path]:
    """{member folder: its model file}, read from the files' paths; every member needs exactly one."""
    from scorebench.results import cell_of_path

    found: dict[str, Path] = {}
    for path in map(Path, model_files):
        try:
            _, dataset, schedule, objective, seed = cell_of_path(path, below=1)
        except (IndexError, ValueError):
            raise ScorebenchError(
                f"evaluate-pack --models {path}: not in a cell's or a pack's folder (.../SCHEDULE/seedN/model.pt)"
            ) from None
        member = st.Study.pack_member_dir(st.Cell(dataset, schedule, objective, seed))
        if member not in members or member in found:
            why = "a second model for" if member in found else "not a member of this group:"
            raise ScorebenchError(f"evaluate-pack --models {path}: {why} {member}")
        found[member] = path
    missing = [m for m in members if m not in found]
    if missing:
        raise ScorebenchError(f"evaluate-pack --models: no model file for member(s) {', '.join(missing)}")
    return found


def _made_once(path: Path, spec: dict, source: Path, make) -> None:
    """Run `make` unless `path` exists with a stamp for this spec and source; then stamp it."""
    stamp = path.with_name(path.name + ".made_from")
    key = made_from(spec, source)
    if path.exists() and stamp.exists() and stamp.read_text() == key:
        log.info("kept %s (made earlier for the same spec and source)", path)
        return
    make()
    write_text(stamp, key)


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


def score_fn_on(model, device, *, amp: str = "off", channels_last: bool = False):
    """`score_fn(x, σ)` for samplers and metrics: the model runs on its device without gradients, in
    float32, and the score comes back where x lives, in x's dtype.

    `amp` runs the model under `scorebench.device.autocast` ("auto": bf16 on CUDA); `channels_last`
    hands 4-D inputs over in NHWC memory order, which convolutions on tensor cores prefer (convert
    the model with `model.to(memory_format=torch.channels_last)` as well).
    """
    import torch

    from scorebench.device import autocast

    def score_fn(x, s):
        xin = x.to(device, torch.float32)
        if channels_last and xin.dim() == 4:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(device, amp):
            out = model(xin, s.to(device, torch.float32))
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


SAMPLE_CHUNK_CPU = 5000  # `batch_size: auto` on a CPU: memory is rarely the limit there
AUTO_PROBE = 256  # chains in the probe batch that measures a score evaluation's memory per sample
AUTO_MEMORY_SHARE = 0.5  # share of free GPU memory a chunk may fill (the rest: allocator slack, neighbours)
SAMPLER_COPIES = 4  # buffers of a sample's size the sampler keeps besides the model's: start, chain, noise, score
PROGRESS_EVERY_S = 30.0  # rule logs are files: a progress line at most this often (plus the first and last)


def sample_job(spec: dict, model_path, out_path) -> dict:
    """Draw `sampling.n_samples` samples for one cell and sampler into an .npz (samples in data units).

    The chains run in chunks of `sampling.batch_size` ("auto": sized from free GPU memory). Each
    finished chunk is kept in `<out>.chunks/`, stamped with the spec and model it was drawn for, so
    a killed job resumes at the first missing chunk, and SIGTERM/SIGUSR1 (SLURM's warnings) stop it
    after the current chunk with `Preempted`. Chunk k draws from its own generator seeded by (cell
    seed, sampler, k), so a resumed run writes exactly the samples of an uninterrupted one. The
    chunk files go once the final file is written.
    """
    import math

    import numpy as np
    import torch

    from scorebench.device import device_description
    from scorebench.errors import Preempted
    from scorebench.sampling import get_sampler
    from scorebench.signals import StopOnSignal

    sampling, sampler = spec["sampling"], spec["sampler"]
    amp, cuda_graphs = sampler.get("amp", "off"), sampler.get("cuda_graphs", "off")
    device, dataset, schedule, model, _ = load_cell_model(spec, model_path, sampling["weights"])
    channels_last = bool(sampler.get("channels_last", False)) and len(dataset.shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = get_sampler(sampler["kind"])
    eps = st.step_size(sampler, schedule)
    sigmas = schedule.sigmas.to(device=device, dtype=torch.float32)
    score_fn = score_fn_on(model, device, amp=amp, channels_last=channels_last)
    n = int(sampling["n_samples"])
    opts = {"snr": sampler["snr"]} if sampler["kind"] == "pc" else {}
    every = 0
    if sampling.get("snapshots", 0) > 0:  # only chunk 0 keeps snapshots (the GIF shows its first chains)
        every = max(1, schedule.levels * max(1, sampler["n_steps"]) // int(sampling["snapshots"]))

    chunk_dir = Path(f"{out_path}.chunks")
    key = made_from(spec, model_path)
    size = resumable_chunk_size(chunk_dir, key)
    if size is None:
        size = chunk_size(sampling["batch_size"], n, score_fn, dataset.shape, float(sigmas[0]), device)
        write_json(chunk_dir / CHUNK_MANIFEST, {"key": key, "chunk_size": size})
    n_chunks = math.ceil(n / size)
    log_ready(log, "sampling")

    def draw(k: int, m: int) -> None:
        g = torch.Generator(device).manual_seed(derive_seed(spec["seed"], "sample", sampler["name"], str(k)))
        t0 = time.perf_counter()
        x0 = initial_points(dataset, m, kind=sampler["kind"], sigma_max=float(sigmas[0]), generator=g, device=device)
        out = run(
            score_fn, x0, sigmas, n_steps=sampler["n_steps"], step_size=eps, generator=g,
            snapshot_every=every if k == 0 else 0, denoise=sampler["denoise"], cuda_graphs=cuda_graphs, **opts,
        )  # fmt: skip
        samples = out.samples.float().cpu().numpy()  # the chunk's one wait for the device
        info = {"key": key, "chunk": k, "n": m, "nfe": out.nfe, "graphed": out.graphed,
                "wall_s": time.perf_counter() - t0}  # fmt: skip
        arrays = {"samples": samples, "meta": np.array(json.dumps(info))}
        if out.snapshots:
            arrays["snapshots"] = np.stack([s[2][:256].float().numpy() for s in out.snapshots])
            arrays["snapshot_level"] = np.array([s[0] for s in out.snapshots])
            arrays["snapshot_step"] = np.array([s[1] for s in out.snapshots])
        with atomic_path(chunk_path(chunk_dir, k)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # uncompressed: a chunk lives only until the final file is written

    sizes = [min(size, n - k * size) for k in range(n_chunks)]
    todo = [k for k in range(n_chunks) if read_chunk_info(chunk_path(chunk_dir, k), key, k, sizes[k]) is None]
    if len(todo) < n_chunks:
        log.info("resuming: %d of %d chunks of %d samples already drawn", n_chunks - len(todo), n_chunks, size)
    else:
        log.info("sampling %d samples in %d chunk(s) of %d", n, n_chunks, size)
    t_start = t_log = time.perf_counter()
    drawn = 0
    with StopOnSignal() as stop:
        for i, k in enumerate(todo):
            draw(k, sizes[k])
            drawn += sizes[k]
            now = time.perf_counter()
            if i == 0 or i + 1 == len(todo) or now - t_log >= PROGRESS_EVERY_S:
                rate = drawn / max(now - t_start, 1e-9)
                left = sum(sizes[j] for j in todo[i + 1 :])
                log.info("sampled chunk %d/%d: %.1f samples/s, %d samples (%.0f s) left", k + 1, n_chunks, rate,
                         left, left / rate)  # fmt: skip
                t_log = now
            if stop.requested and i + 1 < len(todo):
                raise Preempted(
                    f"sampling stopped by {stop.name} after chunk {k + 1}/{n_chunks}; rerun to resume from {chunk_dir}"
                )

    samples, infos, snaps = None, [], {}
    for k in range(n_chunks):
        with np.load(chunk_path(chunk_dir, k)) as z:
            part = z["samples"]
            if samples is None:
                samples = np.empty((n, *part.shape[1:]), dtype=np.float32)
            samples[k * size : k * size + sizes[k]] = part
            infos.append(json.loads(str(z["meta"])))
            if k == 0:
                snaps = {name: z[name] for name in ("snapshots", "snapshot_level", "snapshot_step") if name in z}
    wall = sum(info["wall_s"] for info in infos)  # the whole draw's cost, over every run that drew a chunk
    finite = np.isfinite(samples).all(axis=tuple(range(1, samples.ndim)))
    meta = {
        "nfe": int(infos[0]["nfe"]), "step_size": eps, "wall_s": wall, "n_samples": n,
        "n_nonfinite": int((~finite).sum()), "device": device_description(device),
        "chunk_size": size, "n_chunks": n_chunks, "resumed_chunks": n_chunks - len(todo),
        "samples_per_s": n / max(wall, 1e-9), "amp": amp, "channels_last": channels_last,
        "cuda_graphs": cuda_graphs, "cuda_graphs_used": any(info["graphed"] for info in infos),
    }  # fmt: skip
    write_npz(out_path, samples=samples, meta=np.array(json.dumps(meta)), **snaps)
    shutil.rmtree(chunk_dir, ignore_errors=True)
    log.info("wrote %s: %d samples, %.1f samples/s, nfe %d", out_path, n, meta["samples_per_s"], meta["nfe"])
    return meta


CHUNK_MANIFEST = "chunks.json"


def chunk_path(chunk_dir: Path, k: int) -> Path:
    return chunk_dir / f"chunk_{k:05d}.npz"


def made_from(spec: dict, source_path) -> str:
    """A digest of what an output is made from: its spec and its source file's bytes (a sample
    chunk: the sample spec and the model; a retrained model under the same spec, e.g. on another
    GPU, must not mix its samples with the old one's)."""
    digest = hashlib.sha256(st.spec_json(spec).encode())
    with open(source_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resumable_chunk_size(chunk_dir: Path, key: str) -> int | None:
    """The chunk size of chunks left by an earlier run for the same key; otherwise the folder is
    cleared (its chunks belong to other settings or another model) and None is returned."""
    try:
        manifest = json.loads((chunk_dir / CHUNK_MANIFEST).read_text())
        if manifest["key"] == key and int(manifest["chunk_size"]) >= 1:
            return int(manifest["chunk_size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if chunk_dir.exists():
        log.warning("discarding %s: its chunks were drawn for different settings or another model", chunk_dir)
        shutil.rmtree(chunk_dir)
    return None


def read_chunk_info(path: Path, key: str, k: int, n: int) -> dict | None:
    """A finished chunk's record if `path` holds chunk k of `n` samples drawn under `key`, else None."""
    import numpy as np

    try:
        with np.load(path) as z:
            info = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError):
        return None
    ok = info.get("key") == key and info.get("chunk") == k and info.get("n") == n
    return info if ok else None


def chunk_size(batch_size, n: int, score_fn, shape, sigma: float, device) -> int:
    """Chains per chunk: `batch_size`, or for "auto" SAMPLE_CHUNK_CPU on a CPU and, on CUDA, as many
    as fit in AUTO_MEMORY_SHARE of free memory at the peak memory per sample of one score evaluation
    of a probe batch (plus the sampler's own SAMPLER_COPIES buffers)."""
    import torch

    if batch_size != "auto":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ScorebenchError(f"sampling batch_size: need a positive integer or 'auto', got {batch_size!r}")
        return min(n, batch_size)
    if device.type != "cuda":
        return min(n, SAMPLE_CHUNK_CPU)
    probe = min(n, AUTO_PROBE)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.rand((probe, *shape), device=device)
    score_fn(x, torch.full((probe,), sigma, device=device))
    torch.cuda.synchronize(device)
    per_sample = (torch.cuda.max_memory_allocated(device) - base) / probe + SAMPLER_COPIES * x[0].numel() * 4
    del x
    size = max(1, min(n, int(AUTO_MEMORY_SHARE * free / per_sample)))
    log.info("batch_size auto: %d chains per chunk (%.0f MiB free, %.2f MiB per chain)", size, free / 2**20,
             per_sample / 2**20)  # fmt: skip
    return size


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
    log_ready(log, "score error")
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
