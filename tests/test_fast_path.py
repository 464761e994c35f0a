"""The trainer's fast path computes what the plain fp32 eager loop computes.

Each switch is checked against the plain path on the same batch and seed:
- torch.compile (when this machine has the C++ compiler inductor needs): loss and gradients agree
  within 1e-5 relative (norm of the difference over the norm), through the trainer too; a compile
  that cannot work (the double backward of sliced score matching) falls back to eager and then
  trains bit-for-bit like an eager run;
- channels_last: within 1e-5 relative; fused and foreach Adam: like torch's for-loop Adam within
  1e-5 after 40 steps (measured: foreach bit-equal, fused 5e-7); bf16 autocast (CPU): loss within
  1e-2 and gradients within 5e-2 relative (bf16 keeps 8 mantissa bits, ~4e-3 per rounding;
  measured 2e-5 and 2.3e-2 on the tiny U-Net);
- checkpoints resume across fast/plain switches, and a fast and a plain run of DSM on ring8 reach
  the same relative score error (measured 0.141 plain vs 0.144 fast; tolerance 0.02 absolute).
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest
import torch

from scorebench.device import SWITCH_MODES, FastPath, autocast, resolve_fast_path
from scorebench.errors import ScorebenchError
from scorebench.losses import make_loss
from scorebench.models import build_model
from scorebench.noise import make_schedule
from scorebench.train import TrainSettings, ema_model, load_model_file, train

HAS_COMPILER = shutil.which("g++") is not None or shutil.which("c++") is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile on CPU needs a C++ compiler")

COMPILE_RTOL = 1e-5
CHANNELS_LAST_RTOL = 1e-5
ADAM_RTOL = 1e-5
BF16_LOSS_RTOL, BF16_GRAD_RTOL = 1e-2, 5e-2
SCORE_ERROR_ATOL = 0.02
LEARNED = 0.25

PLAIN = dict(compile="off", channels_last="off", fused_adam="off", amp="off")


def mlp(schedule, seed=0):
    return build_model("mlp", shape=(2,), sigmas=schedule.sigmas, preset="tiny",
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip


def tiny_unet(seed=0):
    return build_model("unet", shape=(1, 8, 8), preset="tiny", channels=8, channel_mult=[1, 2],
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip


def settings(**kw):
    base = dict(steps=40, batch_size=64, lr=1e-3, ema_decay=0.9, checkpoint_every=20, log_every=10, seed=3,
                device="cpu", progress=False)  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


def loss_and_grads(model, net, x, objective="dsm", amp="off"):
    """Loss and flat gradient of one batch, the noise drawn from a fixed seed (as the trainer draws it)."""
    model.zero_grad(set_to_none=True)
    sigma = torch.linspace(0.1, 2.0, x.shape[0])
    with autocast(torch.device("cpu"), amp):
        loss = make_loss(objective)(net, x, sigma, sigma**2, generator=torch.Generator().manual_seed(5)).float().mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def rel(a, b):
    return float((a - b).norm() / b.norm())


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# switches


def test_auto_is_the_fast_choice_for_the_device_and_each_switch_is_honoured():
    cpu = torch.device("cpu")
    auto = resolve_fast_path(cpu, sample_dim=4)
    assert auto == FastPath(compile=False, channels_last=False, adam="fused", data_on_device=True, precision="fp32")
    forced = resolve_fast_path(cpu, compile="on", channels_last=True, fused_adam="on", amp="bf16", sample_dim=4)
    assert forced == FastPath(compile=True, channels_last=True, adam="fused", data_on_device=True, precision="bf16")
    assert not resolve_fast_path(cpu, channels_last="on", sample_dim=2).channels_last  # NHWC needs 4-D
    assert resolve_fast_path(cpu, fused_adam=False).adam == "loop"
    # YAML reads unquoted on/off as booleans
    assert settings(compile=False, channels_last=True).compile == "off"
    assert settings(channels_last=True).channels_last == "on"
    for field in ("compile", "channels_last", "fused_adam", "data_on_device"):
        message = f"train.{field}: must be one of {list(SWITCH_MODES)}, got 'fast'"
        with pytest.raises(ScorebenchError, match=re.escape(message)):
            settings(**{field: "fast"})


def test_the_schema_takes_the_switches_unquoted():
    from scorebench.components import Components
    from scorebench.study import Study, validate_config

    cfg = {"study": "s", "datasets": {"mix": {"kind": "gmm_2mode"}},
           "schedules": {"g": {"kind": "geometric", "sigma_max": 1, "sigma_min": 0.1, "levels": 3}},
           "objectives": {"dsm": {"kind": "dsm"}},
           "training": {"compile": False, "channels_last": "on", "data_on_device": True}}  # fmt: skip
    study = Study(validate_config(cfg))
    made = Components(study.train_spec(study.cells[0])).settings
    assert (made.compile, made.channels_last, made.fused_adam, made.data_on_device) == ("off", "on", "auto", "on")


# ---------------------------------------------------------------------------------------------
# each part against the plain path, on one batch


def test_channels_last_matches_the_contiguous_layout():
    model = tiny_unet()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loss0, grad0 = loss_and_grads(model, model, x)
    model.to(memory_format=torch.channels_last)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    loss1, grad1 = loss_and_grads(model, model, x.contiguous(memory_format=torch.channels_last))
    assert rel(loss1, loss0) < CHANNELS_LAST_RTOL and rel(grad1, grad0) < CHANNELS_LAST_RTOL


def test_bf16_autocast_stays_close_to_fp32():
    model = tiny_unet()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loss0, grad0 = loss_and_grads(model, model, x)
    loss1, grad1 = loss_and_grads(model, model, x, amp="bf16")
    assert rel(loss1, loss0) < BF16_LOSS_RTOL and rel(grad1, grad0) < BF16_GRAD_RTOL
    assert rel(grad1, grad0) > 0  # bf16 really ran


def test_trainer_in_channels_last_follows_the_contiguous_run(tmp_path):
    images = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    levels = make_schedule("geometric", sigma_max=1.0, sigma_min=0.05, levels=4)
    logs = {}
    for mode in ("off", "on"):
        run = settings(steps=10, batch_size=16, log_every=1, channels_last=mode)
        train(tiny_unet(), make_loss("dsm"), images, levels, run, tmp_path / mode)
        logs[mode] = read_log(tmp_path / mode / "train_log.jsonl")
        assert load_model_file(tmp_path / mode / "model.pt")["device"]["fast_path"]["channels_last"] is (mode == "on")
    first_off, first_on = logs["off"][0], logs["on"][0]  # step 1: the same batch, the same weights
    assert first_on["loss"] == pytest.approx(first_off["loss"], rel=CHANNELS_LAST_RTOL)
    assert first_on["grad_norm"] == pytest.approx(first_off["grad_norm"], rel=CHANNELS_LAST_RTOL)
    # later steps start from weights that Adam moved by ~lr·sign(g), which amplifies 1e-7 differences
    assert [r["loss"] for r in logs["on"]] == pytest.approx([r["loss"] for r in logs["off"]], rel=1e-3)


@needs_compiler
@pytest.mark.slow
def test_compiled_forward_matches_eager_loss_and_gradients(schedule):
    """~20 s: inductor compiles the tiny MLP's forward and backward once."""
    model = mlp(schedule)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 3
    loss0, grad0 = loss_and_grads(model, model, x)
    loss1, grad1 = loss_and_grads(model, torch.compile(model), x)
    assert rel(loss1, loss0) < COMPILE_RTOL and rel(grad1, grad0) < COMPILE_RTOL


def test_fused_adam_follows_the_for_loop(tmp_path, ring8, schedule):
    states = {}
    for mode in ("off", "on", "auto"):
        model = mlp(schedule)
        train(model, make_loss("dsm"), ring8, schedule, settings(fused_adam=mode, checkpoint_every=40), tmp_path / mode)
        states[mode] = torch.cat([p.detach().flatten() for p in model.parameters()])
        adam = load_model_file(tmp_path / mode / "model.pt")["device"]["fast_path"]["adam"]
        assert adam == {"off": "loop", "on": "fused", "auto": "fused"}[mode]
    start = torch.cat([p.detach().flatten() for p in mlp(schedule).parameters()])
    moved = (states["off"] - start).norm()
    for mode in ("on", "auto"):
        assert float((states[mode] - states["off"]).norm() / moved) < ADAM_RTOL, mode


# ---------------------------------------------------------------------------------------------
# through the trainer


@needs_compiler
@pytest.mark.slow
def test_trainer_compiled_equals_eager_and_records_compile_time(tmp_path, ring8, schedule):
    runs = {}
    for mode in ("off", "on"):
        model = mlp(schedule)
        train(model, make_loss("dsm"), ring8, schedule, settings(compile=mode, fused_adam="off"), tmp_path / mode)
        out = tmp_path / mode
        runs[mode] = (model, read_log(out / "train_log.jsonl"), load_model_file(out / "model.pt"))
    (eager, log0, file0), (compiled, log1, file1) = runs["off"], runs["on"]
    for a, b in zip(log0, log1):  # loss and gradient norm of each window
        assert a["loss"] == pytest.approx(b["loss"], rel=COMPILE_RTOL)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=COMPILE_RTOL)
    p0 = torch.cat([p.detach().flatten() for p in eager.parameters()])
    p1 = torch.cat([p.detach().flatten() for p in compiled.parameters()])
    assert rel(p1, p0) < COMPILE_RTOL
    # the compiled wrapper shares the model's parameters: same state_dict keys, no `_orig_mod.` prefix
    assert file1["model"].keys() == file0["model"].keys()
    fast = file1["device"]["fast_path"]
    assert fast["compile"] is True and fast["compile_s"] > 0 and fast["compile_error"] is None
    assert log1[0]["compile_s"] == pytest.approx(fast["compile_s"]) and "compile_s" not in log1[1]
    assert "compile_s" not in log0[0] and file0["device"]["fast_path"]["compile_s"] is None


@needs_compiler
@pytest.mark.slow
def test_a_failing_compile_warns_once_and_trains_exactly_like_eager(tmp_path, ring8, schedule, caplog):
    """Sliced score matching differentiates the score w.r.t. its input with create_graph, a double
    backward that compiled graphs refuse: the first step is redone in eager mode from the same RNG state."""
    sliced = make_loss("sliced")
    eager = mlp(schedule)
    train(eager, sliced, ring8, schedule, settings(compile="off"), tmp_path / "eager")
    tried = mlp(schedule)
    with caplog.at_level(logging.WARNING, logger="scorebench"):
        train(tried, sliced, ring8, schedule, settings(compile="on"), tmp_path / "tried")
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1
    for a, b in zip(eager.state_dict().values(), tried.state_dict().values()):
        assert torch.equal(a, b)
    fast = load_model_file(tmp_path / "tried" / "model.pt")["device"]["fast_path"]
    assert fast["compile"] is False and "double backward" in fast["compile_error"]


@needs_compiler
@pytest.mark.slow
def test_checkpoints_resume_across_fast_and_plain_settings(tmp_path, ring8, schedule):
    dsm = make_loss("dsm")
    train(mlp(schedule), dsm, ring8, schedule, settings(steps=20, **PLAIN), tmp_path)
    fast = settings(steps=40, compile="on", fused_adam="on")
    result = train(mlp(schedule), dsm, ring8, schedule, fast, tmp_path)
    assert (result.resumed_from, result.step) == (20, 40)
    back = train(mlp(schedule), dsm, ring8, schedule, settings(steps=60, **PLAIN), tmp_path)
    assert (back.resumed_from, back.step) == (40, 60)
    assert load_model_file(tmp_path / "model.pt")["device"]["fast_path"]["adam"] == "loop"


@needs_compiler
@pytest.mark.slow
def test_fast_and_plain_training_reach_the_same_score_error(tmp_path, ring8, schedule):
    """1500 DSM steps on ring8 each way (~6 s each once compiled); the fast run compiles, uses fused
    Adam and bf16 autocast. Relative score error at the smallest σ, measured: plain 0.141, fast 0.144."""
    dist, sigma_min = ring8.distribution, float(schedule.sigmas[-1])
    g = torch.Generator().manual_seed(11)
    x = dist.sample(4000, sigma=sigma_min, generator=g).float()
    sig = torch.full((x.shape[0],), sigma_min)
    truth = dist.score(x, sig)
    errors = {}
    for name, switches in {"plain": PLAIN, "fast": dict(compile="on", fused_adam="on", amp="bf16")}.items():
        model = mlp(schedule)
        run = settings(steps=1500, batch_size=512, lr=5e-3, ema_decay=0.98, log_every=500, checkpoint_every=1500,
                       **switches)  # fmt: skip
        train(model, make_loss("dsm"), ring8, schedule, run, tmp_path / name)
        net = ema_model(model, load_model_file(tmp_path / name / "model.pt")["ema"])
        with torch.no_grad():
            errors[name] = float(((net(x, sig) - truth) ** 2).sum(1).mean() / (truth**2).sum(1).mean())
    assert errors["plain"] < LEARNED, errors  # both really learned the score (untrained: ~1)
    assert abs(errors["fast"] - errors["plain"]) < SCORE_ERROR_ATOL, errors
