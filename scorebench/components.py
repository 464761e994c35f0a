"""One spec → the objects it names: dataset, schedule, score model, loss, trainer settings, step size.

A job holds a spec (a plain dict made by study.py); `Components(spec)` is the one step that turns
it into what the lower layers take, so a job never assembles them piece by piece. Each part is
built on first use (an evaluation job never builds a network), and built once: the schedule's
σ₁ "auto" reads the training data, which is loaded only once. Below this module nothing reads a spec.
"""

from __future__ import annotations

from functools import cached_property


class Components:
    """The components of one job's spec.

    Args:
        spec: a job spec (train, sample, evaluation or score-field spec); parts it lacks (a train spec
            has no sampler) are simply not asked for.
        dataset: an already loaded dataset to share (the members of a pack train on one data set).
    """

    def __init__(self, spec: dict, dataset=None):
        self.spec = spec
        if dataset is not None:
            self.dataset = dataset

    @cached_property
    def dataset(self):
        from scorebench.data import load_dataset

        ds = self.spec["dataset"]
        return load_dataset(ds["kind"], **ds["options"])

    @cached_property
    def schedule(self):
        """σ levels and λ; NCSNv2's rules (kind ncsnv2, σ₁ auto) read the training data, and the
        ncsnv2 kind's step size follows the sampler's steps per level (derived from its nfe_budget
        once the data have fixed L) in its step convention."""
        from scorebench.noise import make_schedule

        sch = {k: v for k, v in self.spec["schedule"].items() if k != "name"}
        kind = sch.pop("kind")
        if kind == "ncsnv2" or (kind in ("geometric", "linear") and sch["sigma_max"] == "auto"):
            sch["data"] = self.dataset.train
            if "sampler" in self.spec:  # a train spec has none: its schedule's step size is never used
                sch["steps_per_level"] = lambda levels: max(1, self._steps_for(levels))
                sch["step_convention"] = self.spec["sampler"]["step_convention"]  # the ncsnv2 rule's ε is for this form
        return make_schedule(kind, **sch)

    def _steps_for(self, levels: int) -> int:
        from scorebench.budgets import steps_per_level

        smp = self.spec["sampler"]
        return steps_per_level(smp["kind"], levels, smp["n_steps"], smp["nfe_budget"], smp["denoise"])

    @cached_property
    def steps_per_level(self) -> int:
        """T of the spec's sampler on this schedule: n_steps, or derived from nfe_budget (budgets.py)."""
        from scorebench.errors import ScorebenchError

        smp = self.spec["sampler"]
        steps = self._steps_for(self.schedule.levels)
        if steps < 1 and smp["nfe_budget"] is not None:
            raise ScorebenchError(
                f"sampler {smp['name']} nfe_budget: {smp['nfe_budget']} evaluations per chain leave T = {steps} "
                f"steps per level on schedule {self.spec['schedule']['name']} (L = {self.schedule.levels})"
            )
        return steps

    @property
    def is_oracle(self) -> bool:
        return self.spec["objective"]["kind"] == "oracle"

    @cached_property
    def loss(self):
        from scorebench.losses import make_loss

        opts = {k: v for k, v in self.spec["objective"].items() if k not in ("name", "kind")}
        loss = make_loss(self.spec["objective"]["kind"], **opts)
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and transform.augments:  # flip / dequantise each minibatch (data/transforms.py)
            from scorebench.data.transforms import augmented_loss

            loss = augmented_loss(loss, transform)
        return loss

    @cached_property
    def settings(self):
        """The trainer's settings; the cell seed seeds its draws."""
        from scorebench.train import TrainSettings

        settings = {k: v for k, v in self.spec["training"].items() if k != "pack"}
        return TrainSettings(seed=int(self.spec["seed"]), **settings)

    @cached_property
    def device(self):
        from scorebench.device import resolve_device

        return resolve_device(self.spec["training"]["device"])

    def new_model(self):
        """The cell's untrained network, initial weights from the cell seed (the oracle: the exact score)."""
        import torch

        from scorebench.models import build_model
        from scorebench.models.oracle import OracleScore

        if self.is_oracle:
            return OracleScore(self.dataset.distribution)
        from scorebench.models import MODELS

        m = dict(self.spec["model"])
        arch, preset = m.pop("arch"), m.pop("preset")
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and transform.space != "unit" and "rescale_input" in MODELS[arch].PRESETS.get(preset, {}):
            m["rescale_input"] = False  # the authors' networks take rescaled or logit data as they are
        init = torch.Generator().manual_seed(int(self.spec["seed"]))  # initial weights follow the cell seed
        return build_model(arch, shape=self.dataset.shape, sigmas=self.schedule.sigmas, preset=preset,
                           generator=init, **m)  # fmt: skip

    def trained_model(self, model_path, weights: str):
        """The cell's trained network from its model.pt (`weights` "ema" or "raw"), in eval mode on
        this spec's device; returns (model, the file's dict)."""
        from scorebench.models.loading import load_score_model

        return load_score_model(model_path, self.dataset.distribution, weights=weights, device=self.device)

    @cached_property
    def step(self) -> tuple[float, str]:
        """(ε, rule) of the spec's sampler (budgets.resolve_step_size): explicit, noiseless, the
        schedule's own ncsnv2 rule, the sampler's step_rule (ncsnv2), or step_ratio·σ_L²."""
        from scorebench.budgets import resolve_step_size

        schedule = self.schedule
        sigmas = [float(s) for s in schedule.sigmas]
        return resolve_step_size(self.spec["sampler"], sigmas, self.steps_per_level, schedule.step_size)

    @property
    def step_size(self) -> float:
        """ε of the spec's sampler (see `step`)."""
        return self.step[0]
