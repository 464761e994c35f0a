"""Core-library throughput: the trainer and a sampler, on their fast path and on the plain fp32 loop.

A benchmark, not a test: it times the real `scorebench.train.train` loop (its own log's
steps_per_s, which leaves out a compiling step) and a real sampler (`scorebench.sampling`, fed by
the sample job's `scorebench.models.loading.score_fn_on`), and prints ONE JSON line so runs on different
machines can be collected and compared like for like.

    python bench/throughput.py --dataset gmm_ring8 --model mlp --preset tiny --objective dsm \
        --batch 128 --steps 200 --sample-batch 1000 --device cpu
    python bench/throughput.py --model ncsn --shape 3,32,32 --ngf 128 --batch 128 --sample-batch 1000 \
        --device cuda --fast

Modes: `--fast` = the trainer's fast settings (every switch "auto": bf16 autocast, torch.compile,
channels_last, fused Adam and a resident data set on CUDA; foreach Adam on CPU; host syncs only at
log steps) and the sampler's (bf16, channels_last, CUDA graphs on CUDA); `--plain` = the
straightforward fp32 eager loop (no compile, no channels_last, for-loop Adam, batches copied per
step, a host sync every step, eager sampling). With neither, both run and the line holds `fast`,
`plain`, `speedup_train` and `speedup_sample` (fast / plain).

Reported per mode (medians over --repeats after one discarded warm-up of each part):
    params: trainable parameters.
    train_steps_per_s, train_images_per_s (= steps/s x batch); compile_s when the forward compiled.
    sample_evals_per_s: batched score-network calls per second during a whole chain;
    sample_images_per_s: finished samples per second = sample batch / time of the whole chain
        (levels x steps per level score calls for annealed Langevin).
    peak_mem_mb: peak CUDA memory allocated (GPU) or peak resident set size of the process (CPU).
    train_flops_per_step: FLOPs of one training step (torch.utils.flop_counter, eager fp32; null for
        exact/sliced objectives, whose input-gradient step the counter cannot follow);
    tflops: their rate at train_steps_per_s; peak_share: tflops over the GPU's dense bf16 peak
        (null for GPUs not in PEAK_BF16_TFLOPS, and both null on CPU).
    fast_path: what the trainer ran (scorebench.device.FastPath), device: device_description.
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
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from scorebench.data import DATASETS, load_dataset  # noqa: E402
from scorebench.device import device_description, resolve_device, resolve_fast_path, synchronize  # noqa: E402
from scorebench.models.loading import score_fn_on  # noqa: E402
from scorebench.losses import LOSSES, make_loss  # noqa: E402
from scorebench.models import MODELS, build_model, count_parameters  # noqa: E402
from scorebench.noise import make_schedule, max_pairwise_distance  # noqa: E402
from scorebench.sampling import SAMPLERS, get_sampler  # noqa: E402
from scorebench.train import LOG_NAME, MODEL_NAME, TrainSettings, load_model_file, train  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets, matched in order
# against the CUDA device name; None: a known name without a peak here.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", None), ("H100", 989.0), ("A100", 312.0))
# The hyper-parameter --ngf sets, by architecture (the width of the first stage).
WIDTH_KEYS = {"ncsn": "ngf", "unet": "channels", "mlp": "hidden"}
PLAIN_TRAINING = {"compile": "off", "channels_last": "off", "fused_adam": "off", "data_on_device": "off", "amp": "off"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="gmm_ring8", choices=DATASETS)
    p.add_argument("--shape", default=None, help="C,H,W (or D): train on uniform random data of this shape instead")
    p.add_argument("--n-data", type=int, default=4096, help="samples of the random data set (--shape)")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--ngf", type=int, default=None, help="width override: ngf (ncsn), channels (unet), hidden (mlp)")
    p.add_argument("--objective", default="dsm", choices=sorted(LOSSES))
    p.add_argument("--batch", type=int, default=128, help="training batch size")
    p.add_argument("--steps", type=int, default=200, help="training steps per timed repeat")
    p.add_argument("--sample-batch", type=int, default=1000, help="chains run in parallel by the sampler")
    p.add_argument("--sampler", default="annealed_langevin", choices=sorted(SAMPLERS))
    p.add_argument("--sample-steps", "--steps-per-level", dest="sample_steps", type=int, default=5,
                   help="sampler steps per σ level in a timed chain")  # fmt: skip
    p.add_argument("--step-size", type=float, default=1e-6, help="sampler ε (timing only)")
    p.add_argument("--levels", type=int, default=10, help="σ levels of the geometric schedule")
    p.add_argument("--sigma-min", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each part (median reported)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="precision of the fast mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_const", dest="mode", const="fast", help="the fast path only")
    mode.add_argument("--plain", action="store_const", dest="mode", const="plain", help="the plain loop only")
    return p.parse_args(argv)


def make_data(args) -> torch.Tensor:
    """The training tensor: a registered data set, or uniform [0, 1) data of --shape."""
    if args.shape is None:
        return load_dataset(args.dataset).train
    shape = tuple(int(d) for d in args.shape.split(","))
    return torch.rand((args.n_data, *shape), generator=torch.Generator().manual_seed(args.seed))


def new_model(args, shape, schedule):
    width = {WIDTH_KEYS[args.model]: args.ngf} if args.ngf is not None and args.model in WIDTH_KEYS else {}
    init = torch.Generator().manual_seed(args.seed)
    return build_model(args.model, shape=shape, sigmas=schedule.sigmas, preset=args.preset, generator=init, **width)


def time_training(args, mode, data, schedule, device) -> dict:
    """One `train` run of (repeats + 1) x --steps steps; the first --steps are the warm-up (and any
    compilation), each later block of --steps is one timed repeat, read back from the trainer's log.
    The plain mode logs every step, so its loop reads the loss back (a host sync) every step."""
    switches = PLAIN_TRAINING if mode == "plain" else {"amp": args.amp}
    per_log = 1 if mode == "plain" else args.steps
    total = args.steps * (args.repeats + 1)
    settings = TrainSettings(
        steps=total, batch_size=args.batch, lr=1e-4, checkpoint_every=total, log_every=per_log, seed=args.seed,
        device=str(device), progress=False, **switches,
    )  # fmt: skip
    model = new_model(args, tuple(data.shape[1:]), schedule)
    with tempfile.TemporaryDirectory() as out_dir:
        train(model, make_loss(args.objective), data, schedule, settings, out_dir)
        log = [json.loads(line) for line in (Path(out_dir) / LOG_NAME).read_text().splitlines()]
        fast_path = load_model_file(Path(out_dir) / MODEL_NAME)["device"]["fast_path"]
    rates = []
    for r in range(1, args.repeats + 1):
        block = [rec for rec in log if r * args.steps < rec["step"] <= (r + 1) * args.steps]
        seconds = sum(per_log / rec["steps_per_s"] for rec in block)
        rates.append(len(block) * per_log / seconds)
    return {"steps_per_s": statistics.median(rates), "params": count_parameters(model), "fast_path": fast_path}


def time_sampling(args, mode, shape, schedule, device) -> dict:
    """Median time of a whole sampler chain (after one warm-up chain) with the sample job's score_fn."""
    model = new_model(args, shape, schedule).to(device).eval().requires_grad_(False)
    fast = resolve_fast_path(device, sample_dim=len(shape) + 1, amp=args.amp)
    channels_last = mode == "fast" and fast.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    score_fn = score_fn_on(model, device, amp=args.amp if mode == "fast" else "off", channels_last=channels_last)
    sampler = get_sampler(args.sampler)
    sigmas = schedule.sigmas.to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    x_init = torch.rand((args.sample_batch, *shape), generator=g, device=device)
    graphs = "auto" if mode == "fast" else "off"
    times, nfe, graphed = [], 0, False
    for run in range(args.repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        out = sampler(score_fn, x_init, sigmas, n_steps=args.sample_steps, step_size=args.step_size, generator=g,
                      cuda_graphs=graphs)  # fmt: skip
        synchronize(device)
        if run > 0:  # run 0 warms up kernels, the allocator and any CUDA graph capture
            times.append(time.perf_counter() - start)
        nfe, graphed = out.nfe, bool(getattr(out, "graphed", False))
    chain_s = statistics.median(times)
    return {"evals_per_s": nfe / chain_s, "images_per_s": args.sample_batch / chain_s, "nfe": nfe, "graphed": graphed}


def train_step_flops(args, data, schedule, device) -> int | None:
    """FLOPs of one training step (forward, loss and backward, eager fp32) as FlopCounterMode counts them.

    None for objectives that take autograd.grad w.r.t. the input (exact, sliced): FlopCounterMode's
    module tracker refuses `autograd.grad` on a leaf ("not supported" in torch 2.x)."""
    model = new_model(args, tuple(data.shape[1:]), schedule).to(device).train()
    g = torch.Generator(device=device).manual_seed(args.seed)
    x = data[: args.batch].to(device)
    if x.shape[0] < args.batch:  # a small data set: repeat it up to one batch
        x = x.repeat((args.batch + x.shape[0] - 1) // x.shape[0], *([1] * (x.dim() - 1)))[: args.batch]
    level = torch.randint(schedule.levels, (args.batch,), generator=g, device=device)
    sigmas, weights = schedule.sigmas.to(device, torch.float32), schedule.weights.to(device, torch.float32)
    try:
        with FlopCounterMode(display=False) as counter:
            make_loss(args.objective)(model, x, sigmas[level], weights[level], generator=g).mean().backward()
    except RuntimeError:
        return None
    return int(counter.get_total_flops())


def peak_bf16_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(args, mode, data, schedule, device, flops) -> dict:
    """One mode's row: training, then sampling, each on its own fresh model."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    tr = time_training(args, mode, data, schedule, device)
    sa = time_sampling(args, mode, tuple(data.shape[1:]), schedule, device)
    peak = peak_bf16_tflops(device)
    tflops = flops * tr["steps_per_s"] / 1e12 if device.type == "cuda" and flops is not None else None
    fast_path = tr["fast_path"]
    return {
        "mode": mode,
        "params": tr["params"],
        "train_steps_per_s": round(tr["steps_per_s"], 3),
        "train_images_per_s": round(tr["steps_per_s"] * args.batch, 1),
        "compile_s": None if fast_path["compile_s"] is None else round(fast_path["compile_s"], 2),
        "sample_evals_per_s": round(sa["evals_per_s"], 3),
        "sample_images_per_s": round(sa["images_per_s"], 2),
        "sample_nfe": sa["nfe"],
        "sample_cuda_graphs": sa["graphed"],
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "train_flops_per_step": flops,
        "tflops": None if tflops is None else round(tflops, 2),
        "peak_share": None if tflops is None or peak is None else round(tflops / peak, 4),
        "fast_path": fast_path,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = make_data(args)
    sigma_max = max(max_pairwise_distance(data), 2 * args.sigma_min)  # NCSNv2 technique 1
    schedule = make_schedule("geometric", sigma_max=sigma_max, sigma_min=args.sigma_min, levels=args.levels)
    flops = train_step_flops(args, data, schedule, device)
    head = {
        "dataset": None if args.shape else args.dataset,
        "shape": list(data.shape[1:]),
        "model": args.model,
        "preset": args.preset,
        "ngf": args.ngf,
        "objective": args.objective,
        "batch": args.batch,
        "sample_batch": args.sample_batch,
        "sampler": args.sampler,
        "steps_per_level": args.sample_steps,
        "levels": args.levels,
        "amp": args.amp,
    }
    if args.mode is not None:
        row = {**head, **measure(args, args.mode, data, schedule, device, flops)}
    else:
        plain = measure(args, "plain", data, schedule, device, flops)
        fast = measure(args, "fast", data, schedule, device, flops)
        row = {
            **head,
            "params": fast["params"],
            "speedup_train": round(fast["train_steps_per_s"] / plain["train_steps_per_s"], 3),
            "speedup_sample": round(fast["sample_images_per_s"] / plain["sample_images_per_s"], 3),
            "fast": fast,
            "plain": plain,
        }
    row["device"] = device_description(device)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
