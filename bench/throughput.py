"""Core-library throughput: training steps and sampler score evaluations per second.

A benchmark, not a test: it times the real `scorebench.train.train` loop (its own log's
steps_per_s, measured between the loop's start and its final sync) and a real sampler, and prints
ONE JSON line so runs on different machines can be collected and compared like for like.

    python bench/throughput.py --dataset gmm_ring8 --model mlp --preset tiny --objective dsm \
        --batch 128 --steps 200 --sample-batch 1000 --device cpu
    python bench/throughput.py --dataset digits --model unet --preset tiny --objective dsm --device auto

Reported (medians over --repeats after one discarded warm-up run of each part):
    params: trainable parameters.
    train_steps_per_s, train_images_per_s (= steps/s x batch).
    sample_evals_per_s: batched score-network calls per second during sampling;
    sample_images_per_s: per-sample score evaluations per second (= evals/s x sample batch).
    peak_mem_mb: peak CUDA memory allocated (GPU) or peak resident set size of the process (CPU).
    device: scorebench.device.device_description of the device used.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from scorebench.data import DATASETS, load_dataset  # noqa: E402
from scorebench.device import device_description, resolve_device  # noqa: E402
from scorebench.losses import LOSSES, make_loss  # noqa: E402
from scorebench.models import MODELS, build_model, count_parameters  # noqa: E402
from scorebench.noise import make_schedule, max_pairwise_distance  # noqa: E402
from scorebench.sampling import SAMPLERS  # noqa: E402
from scorebench.train import LOG_NAME, TrainSettings, train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="gmm_ring8", choices=DATASETS)
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--objective", default="dsm", choices=sorted(LOSSES))
    p.add_argument("--batch", type=int, default=128, help="training batch size")
    p.add_argument("--steps", type=int, default=200, help="training steps per timed run")
    p.add_argument("--sample-batch", type=int, default=1000, help="chains run in parallel by the sampler")
    p.add_argument("--sampler", default="annealed_langevin", choices=sorted(SAMPLERS))
    p.add_argument("--sample-steps", type=int, default=5, help="sampler steps per σ level per timed run")
    p.add_argument("--levels", type=int, default=10, help="σ levels of the geometric schedule")
    p.add_argument("--sigma-min", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each part (median reported)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")
    return p.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(args, dataset, schedule, device) -> tuple[float, int]:
    """Median steps/s of `repeats` fresh training runs (after one warm-up run); also the parameter count."""
    loss_fn = make_loss(args.objective)
    rates, params = [], 0
    for run in range(args.repeats + 1):
        model = build_model(args.model, shape=dataset.shape, sigmas=schedule.sigmas, preset=args.preset)
        params = count_parameters(model)
        settings = TrainSettings(
            steps=args.steps, batch_size=args.batch, lr=1e-4, checkpoint_every=args.steps, log_every=args.steps,
            seed=args.seed + run, device=str(device), amp=args.amp, progress=False,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as out_dir:
            train(model, loss_fn, dataset.train, schedule, settings, out_dir)
            last = json.loads((Path(out_dir) / LOG_NAME).read_text().splitlines()[-1])
        if run > 0:  # run 0 warms up kernels, allocator and caches
            rates.append(last["steps_per_s"])
    return statistics.median(rates), params


def time_sampling(args, dataset, schedule, device) -> float:
    """Median batched score evaluations per second of the sampler (after one warm-up run)."""
    model = build_model(args.model, shape=dataset.shape, sigmas=schedule.sigmas, preset=args.preset)
    model = model.to(device).eval().requires_grad_(False)
    sampler = SAMPLERS[args.sampler]
    sigmas = schedule.sigmas.to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    x_init = torch.randn((args.sample_batch, *dataset.shape), generator=g, device=device)
    rates = []
    for run in range(args.repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            out = sampler(model, x_init, sigmas, n_steps=args.sample_steps, step_size=1e-6, generator=g)
        synchronize(device)
        if run > 0:
            rates.append(out.nfe / (time.perf_counter() - start))
    return statistics.median(rates)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dataset = load_dataset(args.dataset)
    sigma_max = max(max_pairwise_distance(dataset.train), 2 * args.sigma_min)  # NCSNv2 technique 1
    schedule = make_schedule("geometric", sigma_max=sigma_max, sigma_min=args.sigma_min, levels=args.levels)
    steps_per_s, params = time_training(args, dataset, schedule, device)
    evals_per_s = time_sampling(args, dataset, schedule, device)
    row = {
        "dataset": args.dataset,
        "model": args.model,
        "preset": args.preset,
        "objective": args.objective,
        "batch": args.batch,
        "sample_batch": args.sample_batch,
        "sampler": args.sampler,
        "amp": args.amp,
        "params": params,
        "train_steps_per_s": round(steps_per_s, 3),
        "train_images_per_s": round(steps_per_s * args.batch, 1),
        "sample_evals_per_s": round(evals_per_s, 3),
        "sample_images_per_s": round(evals_per_s * args.sample_batch, 1),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "device": device_description(device),
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
