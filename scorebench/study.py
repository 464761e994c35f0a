"""The only reader of a study config: schema check, the grid of cells, and per-cell specs.

A *study* is a config; a *cell* is one (dataset, schedule, objective, seed). The workflow asks this
module for the cells, for the spec of each job (a plain, JSON-able dict holding exactly the
settings that job depends on, so Snakemake reruns a job only when its own spec changes), and the
command line turns a spec back into components (dataset, schedule, loss, model). Below this
module nothing reads config dicts.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

from scorebench import report
from scorebench.checks import check_config, check_study
from scorebench.config_file import read_config
from scorebench.data.registry import TOY_DATASETS, dataset_dim
from scorebench.errors import ScorebenchError
from scorebench.layout import member_dir
from scorebench.schema import validate_config

# Objectives whose model is not trained here: the exact score, or weights imported from a file.
UNTRAINED = ("oracle", "imported")

# Toys (TOY_DATASETS): vectors with a closed-form score; an MLP by default, no FID reference. gmm_nd
# may have any dimension, so the 2-D-only figures (score fields, the animation) ask `is_2d_toy`.

# Defaults of the keys a study may leave out live in the schema only (scorebench/schema.py says how
# per-dataset overrides stay partial); they are filled in when the config is read and written into
# every spec, so changing one reruns what depends on it.
PACKABLE_ARCHS = ("mlp",)  # packed.PackedMLP stacks these


@dataclass(frozen=True, order=True)
class Cell:
    """One grid point; its fields are the path wildcards."""

    dataset: str
    schedule: str
    objective: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.schedule}/{self.objective}/seed{self.seed}"


def load_config(path) -> dict:
    """Read a YAML study config (file:line errors, duplicate keys refused), check it and fill its defaults."""
    return validate_config(read_config(path))


def _merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    out.update(copy.deepcopy(override or {}))
    return out


def _deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys merged in, recursively for nested mappings (copies, both unchanged)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if nested else copy.deepcopy(value)
    return out


class Study:
    """A validated config seen as a grid of cells with per-job specs."""

    def __init__(self, config: dict):
        self.config = config
        self.name = config["study"]
        self.results_dir = config["results_dir"]
        check_config(config)
        self._check_sampler_overrides()
        self.cells = self._grid()
        if not self.cells:
            raise ScorebenchError("config exclude: every cell of the grid is excluded; nothing to run")
        self._check_figures()
        self._check_packs()
        check_study(self)
        self.packs = self._packs()  # {"dataset/objective": cells} of packed training
        self._pack_of = {cell: name for name, cells in self.packs.items() for cell in cells}
        self.eval_groups = self._eval_groups()  # {"dataset/objective": cells} evaluated in groups
        self._eval_group_of = {cell: name for name, cells in self.eval_groups.items() for cell in cells}
        self._eval_shard_of = {
            cell: f"shard{i}" for name in self.eval_groups for i, shard in enumerate(self.eval_shards(name)) for cell in shard
        }  # fmt: skip

    # ------------------------------------------------------------------ grid

    def _excluded(self, cell: Cell) -> bool:
        for rule in self.config["exclude"]:
            if all(getattr(cell, k) == v for k, v in rule.items()):
                return True
        return False

    def _grid(self) -> list[Cell]:
        c = self.config
        cells, refused = [], []
        for d, s, o, seed in itertools.product(c["datasets"], c["schedules"], c["objectives"], c["seeds"]):
            cell = Cell(d, s, o, int(seed))
            if self._excluded(cell):
                continue
            why = self.impossible(cell)
            if why:
                refused.append(f"{d}/{s}/{o}: {why}")
            else:
                cells.append(cell)
        if refused:
            unique = sorted(set(refused))
            raise ScorebenchError(
                "config: impossible cells (list them under `exclude:` to skip them): " + "; ".join(unique)
            )
        return sorted(cells)

    def impossible(self, cell: Cell) -> str | None:
        """Why a cell cannot run, or None. Checked when the config is read, before any job."""
        ds = self.config["datasets"][cell.dataset]
        sch = self.config["schedules"][cell.schedule]
        obj = self.config["objectives"][cell.objective]
        model = self.model_settings(cell.dataset)
        if obj["kind"] == "dsm" and sch["kind"] == "none":
            return "denoising score matching needs noise, but schedule kind is `none`"
        if obj["kind"] == "exact":
            dim = self._dim(ds)
            limit = obj["max_dim"]
            if dim is not None and dim > limit:
                return f"exact score matching on {dim} dimensions exceeds max_dim {limit} (use `sliced`)"
        if obj["kind"] == "oracle" and ds["kind"] not in TOY_DATASETS and sch["kind"] == "none":
            return "the oracle of an image dataset (its empirical score) exists only for σ > 0"
        if model["scale_by_sigma"] is True and sch["kind"] == "none":
            return "model scale_by_sigma divides by σ, but schedule kind is `none`"
        if model["arch"] in ("unet", "ncsn", "ncsnv2") and ds["kind"] in TOY_DATASETS:
            return f"model arch {model['arch']} needs images, but the dataset is a toy (vectors)"
        if obj["kind"] == "imported" and model["arch"] not in ("ncsn", "ncsnv2"):
            return f"an imported checkpoint is an NCSN or NCSNv2 network, but the model arch is {model['arch']}"
        if obj["kind"] == "imported" and sch["kind"] == "none":
            return "an imported NCSN/NCSNv2 network is conditioned on σ levels, but schedule kind is `none`"
        return None

    @staticmethod
    def _dim(ds: dict) -> int | None:
        return dataset_dim(ds["kind"], ds["options"])

    # ------------------------------------------------------------------ settings per dataset

    def is_toy(self, dataset: str) -> bool:
        return self.config["datasets"][dataset]["kind"] in TOY_DATASETS

    def is_2d_toy(self, dataset: str) -> bool:
        """A toy in the plane: what score fields and the animation can draw."""
        return self.is_toy(dataset) and self._dim(self.config["datasets"][dataset]) == 2

    def model_settings(self, dataset: str) -> dict:
        """The study's network for toys or images, with the dataset's own overrides."""
        ds = self.config["datasets"][dataset]
        return _merge(self.config["model"]["toy" if self.is_toy(dataset) else "image"], ds["model"])

    def cell_model_settings(self, cell: Cell) -> dict:
        """Model settings with `scale_by_sigma: auto` resolved: on (NCSNv2's s(x)/σ) wherever σ > 0."""
        m = self.model_settings(cell.dataset)
        if m["scale_by_sigma"] == "auto":
            m["scale_by_sigma"] = self.config["schedules"][cell.schedule]["kind"] != "none"
        return m

    def training_settings(self, dataset: str) -> dict:
        """The study's training settings, with the dataset's own overrides."""
        return _merge(self.config["training"], self.config["datasets"][dataset]["training"])

    def preset_names(self, table: str) -> list[str]:
        """Names of the presets under `datasets`, `schedules` or `objectives` (the path wildcards' values)."""
        return sorted(self.config[table])

    @property
    def samplers(self) -> list[str]:
        return sorted(self.config["sampling"]["samplers"])

    def sampler_settings(self, dataset: str, sampler: str) -> dict:
        """The study's sampler preset, with the dataset's own `sampling/samplers/NAME` overrides merged in."""
        override = self.config["datasets"][dataset]["sampling"]["samplers"].get(sampler, {})  # a dataset may override none
        return _deep_merge(self.config["sampling"]["samplers"][sampler], override)

    # ------------------------------------------------------------------ job specs

    def dataset_spec(self, dataset: str) -> dict:
        ds = self.config["datasets"][dataset]
        options = dict(ds["options"])
        if ds["kind"] not in TOY_DATASETS:
            options.setdefault("root", self.config["data_dir"])  # torchvision's folder: the study's data_dir
        return {"name": dataset, "kind": ds["kind"], "options": options}

    def train_spec(self, cell: Cell) -> dict:
        """Everything the training job of a cell depends on (and nothing else)."""
        return {
            "study": self.name,
            "cell": cell.id,
            "seed": cell.seed,
            "dataset": self.dataset_spec(cell.dataset),
            "schedule": {"name": cell.schedule, **self.config["schedules"][cell.schedule]},
            "objective": {"name": cell.objective, **self.config["objectives"][cell.objective]},
            "model": self.cell_model_settings(cell),
            "training": self.training_settings(cell.dataset),
        }

    def sample_spec(self, cell: Cell, sampler: str) -> dict:
        s = self.config["sampling"]
        return {
            **self.train_spec(cell),
            "sampler": {"name": sampler, **self.sampler_settings(cell.dataset, sampler)},
            "sampling": {k: s[k] for k in ("n_samples", "weights", "batch_size", "snapshots")},
        }

    def eval_spec(self, cell: Cell, sampler: str | None = None) -> dict:
        """Spec of an evaluation job: the sample spec (or train spec for score error) plus evaluation settings."""
        base = self.sample_spec(cell, sampler) if sampler else self.train_spec(cell)
        ev = self.config["evaluation"]
        return {
            **base,
            "weights": self.config["sampling"]["weights"],
            "evaluation": ev["fid"] if sampler else ev["score_error"],
        }

    def reference_spec(self, dataset: str) -> dict:
        return {"study": self.name, "dataset": self.dataset_spec(dataset), "fid": self.config["evaluation"]["fid"]}

    # ------------------------------------------------------------------ packed training (training.pack)

    def _packs(self) -> dict[str, list[Cell]]:
        """{pack name "dataset/objective": its cells} for datasets with `training.pack: true`.

        A pack is the trained cells of one dataset × objective (every schedule, λ and seed of an
        ablation): they share a network architecture and training settings, so they train as one.
        Only MLP cells pack; with `pack: true` for the whole study, the others train one per job.
        """
        packs: dict[str, list[Cell]] = {}
        for cell in self.cells:
            if (
                self.training_settings(cell.dataset)["pack"]
                and self.model_settings(cell.dataset)["arch"] in PACKABLE_ARCHS
                and self.config["objectives"][cell.objective]["kind"] not in UNTRAINED
            ):
                packs.setdefault(f"{cell.dataset}/{cell.objective}", []).append(cell)
        return packs

    def pack_of(self, cell: Cell) -> str | None:
        """The name of the pack that trains `cell`, or None when it trains alone."""
        return self._pack_of.get(cell)

    def pack_spec(self, name: str) -> dict:
        """Spec of a pack's training job: {member folder: (unpacked) train spec} for every member."""
        members = {member_dir(c): self.train_spec(c) for c in self.packs[name]}
        return {"study": self.name, "pack": name, "members": members}

    # ------------------------------------------------------------------ grouped evaluation (evaluation.group_size)

    def _eval_groups(self) -> dict[str, list[Cell]]:
        """{"dataset/objective": its cells} for toy datasets when `evaluation.group_size` >= 2.

        Why: a toy cell's sample, evaluate and score-error jobs each pay a process start and
        `import torch` (~1.3 s here) for less work than that. Grouped, one `evaluate_pack` job samples,
        evaluates and score-errors up to group_size cells, packed in training or not. Image cells keep
        one job per cell and rule: each is long enough to want its own process (and GPU).
        """
        if self.config["evaluation"]["group_size"] < 2:
            return {}
        groups: dict[str, list[Cell]] = {}
        for cell in self.cells:
            if self.is_toy(cell.dataset):
                groups.setdefault(f"{cell.dataset}/{cell.objective}", []).append(cell)
        return groups

    def eval_group_of(self, cell: Cell) -> str | None:
        """The name of the evaluation group of `cell`, or None when its jobs run one per cell and rule."""
        return self._eval_group_of.get(cell)

    def eval_shards(self, name: str) -> list[list[Cell]]:
        """An evaluation group's cells in jobs of `evaluation.group_size` (several jobs still run side by side)."""
        cells, size = self.eval_groups[name], self.config["evaluation"]["group_size"]
        return [cells[i : i + size] for i in range(0, len(cells), size)]

    def eval_shard_cells(self, name: str, shard: str) -> list[Cell]:
        """The cells of evaluation job `shard` (`shard<i>`) of group `name`."""
        return self.eval_shards(name)[int(shard.removeprefix("shard"))]

    def eval_shard_of(self, cell: Cell) -> str:
        """The folder name (`shard<i>`) of the evaluation job of a grouped cell."""
        return self._eval_shard_of[cell]

    def eval_pack_spec(self, name: str, shard: str) -> dict:
        """Spec of one evaluation job of a group: for every member folder, the specs its per-cell
        sample, evaluate and score-error jobs would get, so each cell's outputs mean the same."""
        members = {
            member_dir(c): {
                "sample": {s: self.sample_spec(c, s) for s in self.samplers},
                "evaluate": {s: self.eval_spec(c, s) for s in self.samplers},
                "score_error": self.eval_spec(c),
            }
            for c in self.eval_shard_cells(name, shard)
        }
        return {"study": self.name, "group": name, "shard": shard, "members": members}

    def _check_sampler_overrides(self) -> None:
        """A dataset's sampler overrides name sampler presets of the study."""
        for dataset, ds in self.config["datasets"].items():
            for name in ds["sampling"]["samplers"]:
                if name not in self.config["sampling"]["samplers"]:
                    raise ScorebenchError(
                        f"config datasets/{dataset}/sampling/samplers/{name}: not a sampler preset of the study; "
                        f"presets under sampling/samplers: {', '.join(self.samplers)}"
                    )

    def _check_packs(self) -> None:
        """A dataset that asks for packing itself must have a packable network."""
        for dataset, ds in self.config["datasets"].items():
            arch = self.model_settings(dataset)["arch"]
            if ds["training"].get("pack") and arch not in PACKABLE_ARCHS:  # asked by the dataset itself
                raise ScorebenchError(
                    f"config datasets/{dataset}/training/pack: packed training needs model arch mlp, "
                    f"but dataset {dataset} uses {arch}"
                )

    # ------------------------------------------------------------------ paper studies (config `figures:`)

    @property
    def figure_settings(self) -> dict:
        """The `figures:` block, its defaults (every paper study off) filled in by the schema."""
        return self.config["figures"]

    @property
    def paper_studies(self) -> list:
        """The report's paper studies (scorebench.report.PAPER_STUDIES) this study's `figures:` turns on."""
        return report.paper_studies(self.figure_settings)

    @property
    def paper_figures(self) -> list:
        """The figures of those studies (report.Figure: a name, its file formats and its caption)."""
        return report.paper_figures(self)

    @property
    def paper_inputs(self) -> set[str]:
        """What those studies read besides the table: "samples", "fields" (report.INPUTS)."""
        return {need for paper in self.paper_studies for need in paper.needs}

    @property
    def field_cells(self) -> list[Cell]:
        """Cells whose score is evaluated on a 2-D grid: the 2-D toy cells of the first seed (the score-field
        figure draws one seed; its numbers come from the score-error table, every seed), when a paper
        study reads score fields."""
        if "fields" not in self.paper_inputs:
            return []
        first = min(c.seed for c in self.cells)
        return [c for c in self.cells if self.is_2d_toy(c.dataset) and c.seed == first]

    def score_field_spec(self, cell: Cell) -> dict:
        """Spec of a score-field job: the train spec plus which weights to load and the grid size."""
        return {
            **self.train_spec(cell),
            "weights": self.config["sampling"]["weights"],
            "field": {"grid_size": self.figure_settings["grid_size"]},
        }

    def study_figures_spec(self) -> dict:
        """Spec of the paper-figure job: the figure settings and the presets the figures need to name
        things (true mixture weights, σ lists, sampler kinds)."""
        return {
            "study": self.name,
            "figures": self.figure_settings,
            "paper_figures": [f.name for f in self.paper_figures],
            "datasets": {d: self.dataset_spec(d) for d in sorted(self.config["datasets"])},
            "schedules": {n: {"name": n, **s} for n, s in sorted(self.config["schedules"].items())},
            "samplers": {n: {"name": n, **s} for n, s in sorted(self.config["sampling"]["samplers"].items())},
        }

    def _check_figures(self) -> None:
        """Refuse paper studies this config cannot draw, before any job runs (each study's own `check`)."""
        for paper in self.paper_studies:
            why = paper.check(self)
            if why:
                raise ScorebenchError(f"config figures/{paper.flag}: {why}")
