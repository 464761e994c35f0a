"""The sample job: n chains of one cell and sampler, drawn in resumable chunks, into one .npz."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from scorebench.clock import log_ready
from scorebench.components import Components
from scorebench.results import write_npz
from scorebench.seeds import derive_seed
from scorebench.stamps import made_from

log = logging.getLogger("scorebench")

SNAPSHOT_CHAINS = 256  # chains a snapshot keeps (the GIF shows the first ones)


def sample_job(spec: dict, model_path, out_path) -> dict:
    """Draw `sampling.n_samples` samples for one cell and sampler into an .npz (samples in data units).

    The chains run in chunks of `sampling.batch_size` (scorebench.sample_chunks: a killed or
    preempted job resumes at the first missing chunk). Chunk k draws from its own generator seeded
    by (cell seed, sampler, k), so a resumed run writes exactly the samples of an uninterrupted one.
    The chunk files go once the final file is written.
    """
    import numpy as np
    import torch

    from scorebench.device import device_description
    from scorebench.models.loading import score_fn_on
    from scorebench.sample_chunks import chunk_size, draw_chunks, plan_chunks
    from scorebench.sampling import chain_starts, get_sampler

    sampling, sampler = spec["sampling"], spec["sampler"]
    amp, cuda_graphs = sampler["amp"], sampler["cuda_graphs"]
    c = Components(spec)
    device, dataset, schedule = c.device, c.dataset, c.schedule
    model, _ = c.trained_model(model_path, sampling["weights"])
    channels_last = sampler["channels_last"] and len(dataset.shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = get_sampler(sampler["kind"])
    eps, step_rule = c.step  # ε and the rule that gave it (budgets.resolve_step_size)
    steps = c.steps_per_level  # T: n_steps, or derived from nfe_budget for this schedule
    sigmas = schedule.sigmas.to(device=device, dtype=torch.float32)
    score_fn = score_fn_on(model, device, amp=amp, channels_last=channels_last)
    n = int(sampling["n_samples"])
    opts = {"snr": sampler["snr"]} if sampler["kind"] == "pc" else {}
    convention = sampler["step_convention"]  # the update form ε is meant in (sampling.py)
    every = 0
    if sampling["snapshots"] > 0:  # only chunk 0 keeps snapshots (the GIF shows its first chains)
        every = max(1, schedule.levels * max(1, steps) // int(sampling["snapshots"]))

    chunk_dir = Path(f"{out_path}.chunks")
    key = made_from(spec, model_path)
    size = plan_chunks(
        chunk_dir, key, n, lambda: chunk_size(sampling["batch_size"], n, score_fn, dataset.shape, float(sigmas[0]), device)
    )
    log_ready(log, "sampling")

    def draw(k: int, m: int):
        g = torch.Generator(device).manual_seed(derive_seed(spec["seed"], "sample", sampler["name"], str(k)))
        x0 = chain_starts(dataset, m, kind=sampler["kind"], sigma_max=float(sigmas[0]), generator=g, device=device)
        out = run(
            score_fn, x0, sigmas, n_steps=steps, step_size=eps, generator=g,
            snapshot_every=every if k == 0 else 0, denoise=sampler["denoise"], cuda_graphs=cuda_graphs,
            step_convention=convention, **opts,
        )  # fmt: skip
        # images back in [0, 1] where the model space is rescaled or logit (data/transforms.py)
        samples = dataset.to_unit(out.samples).float().cpu().numpy()  # the chunk's one wait for the device
        extra = {}
        if out.snapshots:
            extra["snapshots"] = np.stack([dataset.to_unit(s[2][:SNAPSHOT_CHAINS]).float().numpy() for s in out.snapshots])
            extra["snapshot_level"] = np.array([s[0] for s in out.snapshots])
            extra["snapshot_step"] = np.array([s[1] for s in out.snapshots])
        return samples, {"nfe": out.nfe, "graphed": out.graphed}, extra

    drawn = draw_chunks(chunk_dir, key, n, size, draw)
    samples, infos = drawn["samples"], drawn["infos"]
    wall = sum(info["wall_s"] for info in infos)  # the whole draw's cost, over every run that drew a chunk
    finite = np.isfinite(samples).all(axis=tuple(range(1, samples.ndim)))
    meta = {
        "nfe": int(infos[0]["nfe"]), "steps_per_level": steps, "step_size": eps, "step_rule": step_rule,
        "step_convention": convention, "wall_s": wall, "n_samples": n,
        "n_nonfinite": int((~finite).sum()), "device": device_description(device),
        "chunk_size": size, "n_chunks": drawn["n_chunks"], "resumed_chunks": drawn["resumed_chunks"],
        "samples_per_s": n / max(wall, 1e-9), "amp": amp, "channels_last": channels_last,
        "cuda_graphs": cuda_graphs, "cuda_graphs_used": any(info["graphed"] for info in infos),
        "model_space": dataset.transform.space if dataset.transform is not None else "data",
    }  # fmt: skip
    write_npz(out_path, samples=samples, meta=np.array(json.dumps(meta)), **drawn["snapshots"])
    shutil.rmtree(chunk_dir, ignore_errors=True)
    log.info("wrote %s: %d samples, %.1f samples/s, nfe %d", out_path, n, meta["samples_per_s"], meta["nfe"])
    return meta
