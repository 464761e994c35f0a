"""CondInstanceNorm++ on torch's instance-norm kernel vs the hand-written statistics it replaced.

A benchmark, not a test: prints ONE JSON line. Both forms run in one process on the same inputs
and weights, alternated step by step (so load changes hit both alike), with the CPU's load average
read before and after, at one thread by default (the setting the issue measured in):

- `layer`: one CondInstanceNorm++ call on a (B, C, H, W) activation, forward + backward (train) and
  forward only (sample);
- `network`: the `ncsn` network (models/ncsn.py) at --ngf, a training step's forward + backward and
  a sampler's no-grad forward, with every norm switched between the two forms.

A third form, `authors_ops`, runs the authors' op sequence (mean and unbiased var of the channel
means, native instance norm, then α, γ, β as three element-wise passes), written out here, so the
line also says how the layer compares with the authors' one. Ratios are other form's time / new
time (> 1: the native-kernel form with the fused scale and shift is faster).

    python bench/norm_speed.py --threads 1 --ngf 64 --batch 8 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from scorebench.models import build_model, count_parameters  # noqa: E402
from scorebench.models.norms import NORM_EPS, CondInstanceNormPP  # noqa: E402


def old_forward(self, x, level):
    """The layer as first written in this project (models/ncsn.py before the native kernel): mean,
    var, subtract, rsqrt, multiply; mean and var of the channel means; then γ, α, β element-wise."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    mu = xf.mean(dim=(2, 3), keepdim=True)
    h = (xf - mu) * torch.rsqrt(xf.var(dim=(2, 3), keepdim=True, correction=0) + NORM_EPS)
    m = mu.mean(dim=1, keepdim=True)
    correction = 1 if self.channel_var == "unbiased" and x.shape[1] > 1 else 0
    mu_hat = (mu - m) * torch.rsqrt(mu.var(dim=1, keepdim=True, correction=correction) + NORM_EPS)
    gamma, alpha, beta = self.embed(level)[:, :, None, None].to(xf.dtype).chunk(3, dim=1)
    return gamma * (h + alpha * mu_hat) + beta


def authors_ops_forward(self, x, level):
    """The op sequence of the authors' layer (ermongroup/ncsn `ConditionalInstanceNorm2dPlus`), written
    out here: channel means, their mean and unbiased var, native instance norm without affine, then
    α, γ and β as three full-size element-wise passes."""
    mu = x.mean(dim=(2, 3))
    mu_hat = (mu - mu.mean(dim=1, keepdim=True)) / torch.sqrt(mu.var(dim=1, keepdim=True) + NORM_EPS)
    h = F.instance_norm(x, eps=NORM_EPS)
    gamma, alpha, beta = self.embed(level).chunk(3, dim=1)
    h = h + mu_hat[:, :, None, None] * alpha[:, :, None, None]
    return gamma[:, :, None, None] * h + beta[:, :, None, None]


FORMS = {"old": old_forward, "new": CondInstanceNormPP.forward, "authors_ops": authors_ops_forward}


def use(form: str) -> None:
    CondInstanceNormPP.forward = FORMS[form]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(parts: dict, repeats: int) -> dict:
    """{name: fn} -> {name: {form_s..., ratios}}: medians of runs that alternate the forms step by step."""
    out = {}
    for name, fn in parts.items():
        for form in FORMS:  # warm-up, discarded
            use(form)
            fn()
        times = {form: [] for form in FORMS}
        for _ in range(repeats):
            for form in FORMS:
                use(form)
                times[form].append(timed(fn))
        med = {form: statistics.median(t) for form, t in times.items()}
        out[name] = {
            **{f"{form}_s": v for form, v in med.items()},
            "ratio_old_over_new": med["old"] / med["new"],
            "ratio_authors_ops_over_new": med["authors_ops"] / med["new"],
        }
    use("new")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ngf", type=int, default=64, help="network width (the paper's CIFAR-10 network: 128)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    load_before = os.getloadavg()

    # one layer at the widest activation of the CIFAR-10 network (2·ngf channels at half resolution)
    c, s = 2 * a.ngf, a.size // 2
    norm = CondInstanceNormPP(c, 10)
    x = torch.randn(a.batch, c, s, s, generator=g, requires_grad=True)
    level = torch.randint(10, (a.batch,), generator=g)

    def layer_train():
        norm(x, level).square().sum().backward()

    def layer_sample():
        with torch.no_grad():
            norm(x, level)

    sigmas = torch.logspace(0, -2, 10).tolist()
    net = build_model("ncsn", shape=(3, a.size, a.size), sigmas=sigmas, preset="cifar10", ngf=a.ngf, generator=g)
    xi = torch.rand(a.batch, 3, a.size, a.size, generator=g)
    sig = torch.tensor(sigmas)[torch.randint(10, (a.batch,), generator=g)]

    def net_train():
        net.zero_grad(set_to_none=True)
        net(xi, sig).square().mean().backward()

    def net_sample():
        with torch.no_grad():
            net(xi, sig)

    with torch.no_grad():  # the forms compute the same function
        outs = {}
        for form in FORMS:
            use(form)
            outs[form] = net(xi, sig)
        use("new")
        scale = outs["new"].abs().max()
        max_rel = {form: float((o - outs["new"]).abs().max() / scale) for form, o in outs.items() if form != "new"}

    results = alternate(
        {"layer_train": layer_train, "layer_sample": layer_sample, "network_train": net_train, "network_sample": net_sample},
        a.repeats,
    )
    line = {
        "bench": "norm_speed", "threads": a.threads, "ngf": a.ngf, "batch": a.batch, "size": a.size,
        "repeats": a.repeats, "params": count_parameters(net), "layer_shape": [a.batch, c, s, s],
        "max_rel_diff_vs_new": max_rel, "torch": torch.__version__,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), **results,
    }  # fmt: skip
    print(json.dumps(line))


if __name__ == "__main__":
    main()
