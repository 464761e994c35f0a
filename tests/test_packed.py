"""Packed training (scorebench/packed.py): K cells in one process must train as K separate runs would.

Checked against independent paths, not against itself: the packed forward against each member's
own ScoreMLP; per-member clipping against torch's clip_grad_norm_ on separate copies; a pack of one
against the unpacked trainer step by step; a pack of four against four separate runs through the
analytic score of the data.
"""

import copy
import os
import signal

import pytest
import torch

from scorebench.errors import Preempted, ScorebenchError
from scorebench.losses import make_loss
from scorebench.models import build_model, model_from_config
from scorebench.noise import make_schedule
from scorebench.packed import DRAW_BLOCK, PackedMLP, PackMember, _clip_per_member, _Draws, train_packed
from scorebench.study import Study, load_config
from scorebench.train import TrainSettings, load_model_file, train


def schedules():
    """Four schedules a λ/L ablation packs together: different L, λ, and one without noise."""
    return {
        "L1": make_schedule("single", sigma=0.5),
        "L5_sigma2": make_schedule("geometric", sigma_max=5.0, sigma_min=0.1, levels=5, weighting="sigma2"),
        "L10_sigma": make_schedule("geometric", sigma_max=5.0, sigma_min=0.1, levels=10, weighting="sigma"),
        "L3_uniform": make_schedule("geometric", sigma_max=5.0, sigma_min=0.1, levels=3, weighting="uniform"),
    }


def mlp(ds, schedule, seed, scale=True):
    init = torch.Generator().manual_seed(seed)
    return build_model("mlp", shape=ds.shape, sigmas=schedule.sigmas, preset="tiny", generator=init, scale_by_sigma=scale)


def settings(seed, **kw):
    base = dict(steps=60, batch_size=64, lr=1e-3, ema_decay=0.9, checkpoint_every=20, log_every=10, seed=seed)
    base.update(progress=False, device="cpu", **kw)
    return TrainSettings(**base)


def test_packed_forward_is_each_members_forward(ring8):
    scheds = list(schedules().values())
    members = [mlp(ring8, s, seed=i, scale=i != 2) for i, s in enumerate(scheds)]
    packed = PackedMLP(members)
    x = torch.randn(4 * 16, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.rand(4 * 16, generator=torch.Generator().manual_seed(1)) + 0.05
    out = packed(x, sigma)
    for k, m in enumerate(members):
        rows = slice(16 * k, 16 * (k + 1))
        torch.testing.assert_close(out[rows], m(x[rows], sigma[rows]), rtol=1e-5, atol=1e-6)
    # unstack gives back each member's own state dict
    for k, m in enumerate(members):
        assert {n: torch.equal(v, m.state_dict()[n]) for n, v in packed.unstack(k).items()} == {
            n: True for n in m.state_dict()
        }


def test_level_lookup_gives_each_members_function_and_second_order_gradients(ring8):
    """The training path (conditioning looked up per σ level, the batched linear's own backward)
    against each member's ScoreMLP under torch's autograd, through a sliced-score-matching-like loss
    that differentiates the input gradient again, as exact and sliced score matching do."""
    from scorebench.packed import _level_tables

    scheds = list(schedules().values())
    members = [mlp(ring8, s, seed=i, scale=i != 2) for i, s in enumerate(scheds)]
    fake = [PackMember(str(i), m, s, settings(i), None) for i, (m, s) in enumerate(zip(members, scheds))]
    table, _, levels = _level_tables(fake, "cpu")
    packed = PackedMLP(copy.deepcopy(members), sigma_table=table)
    g = torch.Generator().manual_seed(3)
    level = torch.stack([torch.randint(n, (16,), generator=g) for n in levels])  # (4, 16)
    sigma = table.gather(1, level).reshape(-1)
    x = (torch.randn(4 * 16, 2, generator=g) * 3).requires_grad_(True)
    v = torch.randn(4 * 16, 2, generator=g)

    def second_order_loss(model, x, sigma, **kw):
        s = model(x, sigma, **kw)
        (jtv,) = torch.autograd.grad((v[: len(x)] * s).sum(), x, create_graph=True)
        return ((jtv * v[: len(x)]).sum(1) + 0.5 * (s**2).sum(1)).sum()

    out = packed(x, sigma, level=level)
    torch.testing.assert_close(out, packed(x, sigma), rtol=1e-5, atol=1e-6)  # lookup = per-row embedding
    second_order_loss(packed, x, sigma, level=level).backward()
    for k, m in enumerate(members):
        rows = slice(16 * k, 16 * (k + 1))
        xk = x[rows].detach().requires_grad_(True)
        torch.testing.assert_close(out[rows], m(xk, sigma[rows]), rtol=1e-5, atol=1e-6)
        v_k = v[rows]
        s = m(xk, sigma[rows])
        (jtv,) = torch.autograd.grad((v_k * s).sum(), xk, create_graph=True)
        ((jtv * v_k).sum(1) + 0.5 * (s**2).sum(1)).sum().backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(packed.stacked[name.replace(".", "__")].grad[k], p.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ScorebenchError, match="sigma_table"):
        PackedMLP(members)(x, sigma, level=level)


def test_per_member_clipping_is_clip_grad_norm_of_each_member(ring8):
    scheds = list(schedules().values())[:3]
    members = [mlp(ring8, s, seed=i) for i, s in enumerate(scheds)]
    packed = PackedMLP(copy.deepcopy(members))
    x = torch.randn(3 * 32, 2, generator=torch.Generator().manual_seed(2)) * 3
    sigma = torch.full((3 * 32,), 0.1)
    scales = torch.tensor([1.0, 100.0, 0.001])  # one member far above the clip norm, one far below
    per_member = (packed(x, sigma) ** 2).sum(1).reshape(3, 32).mean(1)
    (per_member * scales).sum().backward()
    norms = _clip_per_member(list(packed.parameters()), 1.0, 3)
    for k, m in enumerate(members):
        rows = slice(32 * k, 32 * (k + 1))
        ((m(x[rows], sigma[rows]) ** 2).sum(1).mean() * scales[k]).backward()
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        assert norms[k].item() == pytest.approx(norm.item(), rel=1e-5)
        for name, p in m.named_parameters():
            torch.testing.assert_close(packed.stacked[name.replace(".", "__")].grad[k], p.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("objective", ["dsm", "sliced_vr"])
def test_a_pack_of_one_follows_the_unpacked_run(tmp_path, ring8, objective):
    """Same draws in the same order: only the batched matrix products' rounding differs."""
    sch = schedules()["L5_sigma2"]
    loss = make_loss(objective)
    train(mlp(ring8, sch, 3), loss, ring8, sch, settings(3), tmp_path / "alone")
    train_packed([PackMember("c", mlp(ring8, sch, 3), sch, settings(3), tmp_path / "packed")], loss, ring8, tmp_path / "ck.pt")
    a, b = load_model_file(tmp_path / "alone" / "model.pt"), load_model_file(tmp_path / "packed" / "model.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in ("model", "ema"):
        for name in a[key]:
            torch.testing.assert_close(b[key][name], a[key][name], rtol=1e-4, atol=1e-5)
    assert b["model_config"] == a["model_config"] and b["settings"] == a["settings"]
    assert b["pack"]["size"] == 1


def relative_score_error(model, ds, sigma: float) -> float:
    x = ds.test
    s = torch.full((x.shape[0],), sigma)
    xt = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        est = model(xt, s)
    true = ds.distribution.score(xt, sigma)
    return float(((est - true) ** 2).sum(1).mean() / (true**2).sum(1).mean())


def test_a_pack_of_four_gives_what_four_separate_runs_give(tmp_path, ring8):
    """Different L, λ and seeds in one pack; each member's score error (against the analytic score
    of the ring, at its smallest σ) matches its separate run within the seed-to-seed spread."""
    scheds = schedules()
    dsm = make_loss("dsm")
    kw = dict(steps=1500, batch_size=128, ema_decay=0.99, checkpoint_every=1500, log_every=500)
    members = []
    for i, (name, sch) in enumerate(scheds.items()):
        train(mlp(ring8, sch, 10 + i), dsm, ring8, sch, settings(10 + i, **kw), tmp_path / "alone" / name)
        members.append(PackMember(name, mlp(ring8, sch, 10 + i), sch, settings(10 + i, **kw), tmp_path / "pack" / name))
    result = train_packed(members, dsm, ring8, tmp_path / "ck.pt", noise_seed=1)
    assert result["size"] == 4 and result["step"] == 1500
    for name, sch in scheds.items():
        sigma = float(sch.sigmas[-1])
        errs = []
        for where in ("alone", "pack"):
            f = load_model_file(tmp_path / where / name / "model.pt")
            m = model_from_config(f["model_config"])
            m.load_state_dict(f["ema"])
            errs.append(relative_score_error(m.eval(), ring8, sigma))
        alone, packed = errs
        untrained = relative_score_error(mlp(ring8, sch, 10).eval(), ring8, sigma)
        # measured alone/packed: L1 0.071/0.069, L5 0.41/0.43, L10 0.50/0.51, L3 0.56/0.57; untrained 1.1-2.9
        assert alone < 0.6 * untrained and packed < 0.6 * untrained, (name, errs, untrained)
        assert abs(packed - alone) < 0.15 * max(alone, packed) + 0.02, (name, errs)
        assert len((tmp_path / "pack" / name / "train_log.jsonl").read_text().splitlines()) == 3


def test_a_members_minibatches_come_from_its_seed_alone():
    """Drawn in blocks from the member's own generator: the same in any pack, whatever its neighbours."""

    def first_steps(seeds, levels):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        draws = _Draws(gens, 1000, levels, 16, DRAW_BLOCK, "cpu")
        return [draws.next() for _ in range(DRAW_BLOCK + 5)]  # across a block boundary

    alone, packed = first_steps([7], [10]), first_steps([3, 7, 5], [2, 10, 50])
    for (idx_a, lev_a), (idx_p, lev_p) in zip(alone, packed):
        assert torch.equal(idx_a[0], idx_p[1]) and torch.equal(lev_a[0], lev_p[1])
        assert not torch.equal(idx_p[0], idx_p[1])
    assert int(max(lev.max() for _, lev in packed)) < 50 and int(max(lev[0].max() for _, lev in packed)) < 2


def test_a_stopped_pack_resumes_exactly(tmp_path, ring8):
    """Stopped at step 23, inside a block of drawn minibatches (DRAW_BLOCK = 32)."""
    assert 0 < 23 % DRAW_BLOCK
    scheds = list(schedules().values())[:2]
    dsm = make_loss("dsm")

    def members(root):
        return [PackMember(f"c{i}", mlp(ring8, s, i), s, settings(i), root / f"c{i}") for i, s in enumerate(scheds)]

    train_packed(members(tmp_path / "full"), dsm, ring8, tmp_path / "full.pt", noise_seed=4)
    calls = {"n": 0}

    def signal_at_23(model, x, sigma, weight, *, generator=None):
        calls["n"] += 1
        if calls["n"] == 23:
            os.kill(os.getpid(), signal.SIGTERM)
        return dsm(model, x, sigma, weight, generator=generator)

    with pytest.raises(Preempted, match="at step 23"):
        train_packed(members(tmp_path / "part"), signal_at_23, ring8, tmp_path / "part.pt", noise_seed=4)
    assert not (tmp_path / "part" / "c0" / "model.pt").exists()
    result = train_packed(members(tmp_path / "part"), dsm, ring8, tmp_path / "part.pt", noise_seed=4)
    assert result["resumed_from"] == 23
    for name in ("c0", "c1"):
        a = load_model_file(tmp_path / "full" / name / "model.pt")
        b = load_model_file(tmp_path / "part" / name / "model.pt")
        for key in ("model", "ema"):
            for p in a[key]:
                assert torch.equal(a[key][p], b[key][p]), (name, key, p)
        log_a = [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")} for r in _read(tmp_path / "full" / name)]
        log_b = [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")} for r in _read(tmp_path / "part" / name)]
        assert log_a == log_b


def _read(folder):
    import json

    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def test_a_diverging_member_is_named(tmp_path, ring8):
    scheds = list(schedules().values())[:3]
    dsm = make_loss("dsm")

    def nan_for_member_1(model, x, sigma, weight, *, generator=None):
        out = dsm(model, x, sigma, weight, generator=generator)
        n = out.shape[0] // 3
        return torch.cat([out[:n], out[n : 2 * n] * float("nan"), out[2 * n :]])

    members = [PackMember(f"cell{i}", mlp(ring8, s, i), s, settings(i), tmp_path / f"c{i}") for i, s in enumerate(scheds)]
    with pytest.raises(ScorebenchError, match="training diverged: cell cell1 of pack .*non-finite loss at step 1"):
        train_packed(members, nan_for_member_1, ring8, tmp_path / "ck.pt")


def test_members_must_share_architecture_and_settings(tmp_path, ring8):
    sch = schedules()["L1"]
    small = build_model("mlp", shape=(2,), sigmas=sch.sigmas, preset="small")
    with pytest.raises(ScorebenchError, match="share one architecture"):
        PackedMLP([mlp(ring8, sch, 0), small])
    members = [
        PackMember("a", mlp(ring8, sch, 0), sch, settings(0), tmp_path / "a"),
        PackMember("b", mlp(ring8, sch, 1), sch, settings(1, lr=2e-3), tmp_path / "b"),
    ]
    with pytest.raises(ScorebenchError, match="member b has training.lr=0.002"):
        train_packed(members, make_loss("dsm"), ring8, tmp_path / "ck.pt")


# ---------------------------------------------------------------------------------------------
# the study side: which cells pack together


def packed_config():
    config = load_config(os.path.join(os.path.dirname(__file__), "..", ".test", "config", "config.yaml"))
    config["training"]["pack"] = True  # digits (a unet) still trains one cell per job
    config["objectives"]["oracle"] = {"kind": "oracle"}
    config["exclude"].append({"dataset": "digits", "objective": "oracle"})
    return config


def test_packs_group_trained_mlp_cells_by_dataset_and_objective():
    study = Study(packed_config())
    assert sorted(study.packs) == ["mix/dsm", "mix/ssm"]
    assert [c.schedule for c in study.packs["mix/ssm"]] == ["geom", "none"]
    for cell in study.cells:
        expected = None if cell.dataset == "digits" or cell.objective == "oracle" else f"{cell.dataset}/{cell.objective}"
        assert study.pack_of(cell) == expected
    spec = study.pack_spec("mix/ssm")
    assert sorted(spec["members"]) == ["geom/seed0", "none/seed0"]
    assert spec["members"]["none/seed0"]["training"]["pack"] is True


def test_asking_to_pack_a_unet_dataset_is_refused_naming_it():
    config = packed_config()
    config["datasets"]["digits"]["training"]["pack"] = True
    with pytest.raises(ScorebenchError, match="datasets/digits/training/pack: packed training needs model arch mlp"):
        Study(config)


# ---------------------------------------------------------------------------------------------
# the workflow: a packed study runs end to end, and every cell keeps its own rows


@pytest.mark.slow
def test_a_packed_study_runs_with_one_training_job_per_pack(tmp_path):
    import pandas as pd
    import yaml
    from test_workflow import job_counts, snakemake

    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", ".test", "config", "config.yaml")))
    del config["datasets"]["digits"]
    config["training"]["pack"] = True
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))

    counts = job_counts(snakemake(tmp_path, "-n", "--cores", "2").stdout)
    assert counts.get("train_pack") == 2 and "train" not in counts  # mix/ssm (2 schedules) and mix/dsm (1)
    assert counts.get("evaluate_pack") == 2 and not {"sample", "evaluate", "score_error"} & set(counts)
    snakemake(tmp_path, "--cores", "2")
    results = tmp_path / "results" / "test"
    df = pd.read_parquet(results / "metrics.parquet")
    assert sorted(df["cell"].unique()) == ["mix/geom/dsm/seed0", "mix/geom/ssm/seed0", "mix/none/ssm/seed0"]
    assert df["training_pack"].all() and df["train_wall_s"].gt(0).all()
    assert set(df[df["sampler"] == "annealed"]["metric"]) >= {"mmd_rbf", "sliced_wasserstein", "mode_weight_error"}
    member = load_model_file(results / "packs" / "mix" / "ssm" / "members" / "none" / "seed0" / "model.pt")
    assert member["pack"]["size"] == 2 and member["model_config"]["scale_by_sigma"] is False
    curves = pd.read_parquet(results / "train_curves.parquet")  # packed logs are read as their cells'
    assert set(zip(curves["dataset"], curves["schedule"], curves["objective"])) == {
        ("mix", "geom", "dsm"), ("mix", "geom", "ssm"), ("mix", "none", "ssm")
    }
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "--cores", "2").stdout
