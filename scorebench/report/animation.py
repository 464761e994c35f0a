"""Paper study `animation`: a GIF of annealed-Langevin chains moving through the σ levels, largest
first, each frame over the perturbed density p_σ at that frame's level (the mixture's exact density
convolved with N(0, σ²) where it is known), ending on a frame of the final samples (after the
denoising step when the sampler has one); its summary section says what the GIF shows."""

from __future__ import annotations

from pathlib import Path

from scorebench.report.job_files import first_seed_samples, sample_cell
from scorebench.report.plotting import AXIS_LABELS, DENSITY_RANGE, NothingToDraw, draw_each, fmt_sigma, mixture_log_density, pyplot
from scorebench.report.requirements import missing_planar_toy
from scorebench.results import atomic_path

FIGURES = ("annealed_langevin",)
FORMATS = ("gif",)


def check(study) -> str | None:
    """The GIF needs snapshots of an annealed-Langevin chain in the plane."""
    if not study.config["sampling"].get("snapshots", 0) > 0:
        return "needs sampling/snapshots > 0 (frames of the GIF)"
    if not any(s["kind"] == "annealed_langevin" for s in study.config["sampling"]["samplers"].values()):
        return "needs a sampler of kind annealed_langevin"
    planar = missing_planar_toy(study)
    return f"{planar}: the GIF shows points" if planar else None


def _clips(sample_files, samplers):
    """(path, snapshots, level, step, final samples) of the first seed of each cell and given sampler."""
    import numpy as np

    clips = []
    for p in first_seed_samples(p for p in sample_files if Path(p).stem in set(samplers)):
        with np.load(p) as z:
            if "snapshots" not in z.files or z["snapshots"].ndim != 3 or z["snapshots"].shape[-1] != 2:
                continue
            clips.append((p, z["snapshots"], z["snapshot_level"], z["snapshot_step"], z["samples"]))
    return clips


def _views(clips):
    """Per dataset, the final samples' 0.5–99.5 % range over its clips ({dataset: (lo, hi)})."""
    import numpy as np

    ranges: dict = {}
    for p, _, _, _, final in clips:
        ok = final[np.isfinite(final).all(1)]
        lo, hi = np.percentile(ok, 0.5, axis=0), np.percentile(ok, 99.5, axis=0)
        ds = sample_cell(p)[0]
        old = ranges.get(ds, (lo, hi))
        ranges[ds] = (np.minimum(old[0], lo), np.maximum(old[1], hi))
    return ranges


def annealed_animation(sample_files, out_path, *, samplers, sigmas: dict, mixtures=None, fps: int = 8,
                       dpi: int = 90, denoising=()) -> int:  # fmt: skip
    """A GIF of the snapshots of the given samplers (first seed of each cell), one panel per cell.

    Frame t shows snapshot t of every panel (a panel with fewer snapshots holds its last one), then
    one last frame shows the final samples (the same first chains), titled "after denoising" for a
    sampler in `denoising` (its last, noise-free step) and "final samples" otherwise; so the GIF has
    the longest snapshot sequence + 1 frames. Each panel's background is p_σ at the level its frame
    shows (a mixture's components widened by σ²; the final frame: p_0), where the density is known.
    Axes are fixed to the final samples' range (shared by the panels of a dataset); the title says
    how many chains are outside the view (large σ spreads them far).

    Args:
        sample_files: samples .npz files (those with `snapshots` arrays are used).
        out_path: the .gif to write (atomically).
        samplers: names of the samplers to animate.
        sigmas: {(dataset, schedule): [σ_1, ..., σ_L]} to name each frame's level.
        mixtures: {dataset: {"means", "stds", "weights"}} for the density behind the points (optional).
        fps: frames per second.
        denoising: names of the samplers whose last step denoises.

    Returns:
        The number of frames written.
    """
    import numpy as np
    from PIL import Image

    plt, _ = pyplot()
    clips = _clips(sample_files, samplers)
    if not clips:
        raise NothingToDraw(FIGURES[0],
            "no 2-D samples file with snapshots among " + ", ".join(sorted(set(samplers)))
            + " (set sampling/snapshots > 0)")
    mixtures = mixtures or {}
    n_frames = max(len(c[1]) for c in clips) + 1  # the snapshots, then the final samples
    fig, axes = plt.subplots(1, len(clips), figsize=(4.3 * len(clips), 4.6), squeeze=False, dpi=dpi)
    ranges = _views(clips)
    views = []
    for p, *_ in clips:
        lo, hi = ranges[sample_cell(p)[0]]
        pad = 0.35 * (hi - lo)
        views.append((lo - pad, hi + pad))
    backgrounds: dict = {}

    def background(ds: str, sigma: float):
        """log p_σ − its maximum on the dataset's view, cached per (dataset, σ)."""
        if ds not in mixtures:
            return None
        if (ds, sigma) not in backgrounds:
            lo, hi = ranges[ds]
            pad = 0.35 * (hi - lo)
            xs, ys = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 120), np.linspace(lo[1] - pad[1], hi[1] + pad[1], 120)
            lp = mixture_log_density(mixtures[ds], xs, ys, sigma)
            backgrounds[(ds, sigma)] = (xs, ys, lp - lp.max())
        return backgrounds[(ds, sigma)]

    frames = []
    for t in range(n_frames):
        for ax, (p, snaps, lev, step, final), (lo, hi) in zip(axes[0], clips, views):
            ax.clear()
            dataset, schedule, objective, _, sampler = sample_cell(p)
            sig = sigmas.get((dataset, schedule))
            last = t == n_frames - 1
            if last:
                x = final[: snaps.shape[1]]
                sigma = 0.0
                where = "after denoising" if sampler in set(denoising) else "final samples"
                density = "p₀"
            else:
                i = min(t, len(snaps) - 1)
                x = snaps[i]
                level = int(lev[i])
                known = sig is not None and 0 <= level < len(sig)
                sigma = float(sig[level]) if known else 0.0
                where = (f"level {level + 1}/{len(sig)}, σ = {fmt_sigma(sig[level])}" if known else f"level {level + 1}")
                where += f", step {int(step[i])}"
                density = f"p_σ, σ = {fmt_sigma(sigma)}" if known else "p₀"
            bg = background(dataset, sigma)
            if bg is not None:
                ax.contourf(*bg, levels=np.linspace(-DENSITY_RANGE, 0, 13), cmap="Oranges", extend="min")
            ax.scatter(x[:, 0], x[:, 1], s=6, alpha=0.7, color="#1f3b73", linewidths=0)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ok = np.isfinite(x).all(1)
            outside = float(np.mean(~(((x >= lo) & (x <= hi)).all(1) & ok)))
            ax.set_title(f"{dataset} · {objective} · {sampler}\n{where}\n"
                         f"{100 * outside:.0f}% of chains outside the view" + (f"; density {density}" if bg is not None else ""),
                         fontsize=9)  # fmt: skip
            ax.set_xlabel(AXIS_LABELS[0], fontsize=9)
            ax.set_ylabel(AXIS_LABELS[1], fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(False)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    plt.close(fig)
    with atomic_path(out_path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return n_frames


def figures(inputs) -> list[str]:
    return draw_each({FIGURES[0]: lambda: annealed_animation(
        inputs.samples, inputs.figures_dir / f"{FIGURES[0]}.gif", samplers=inputs.annealed_samplers, sigmas=inputs.sigmas,
        mixtures=inputs.mixtures, fps=int(inputs.settings.get("fps", 8)), denoising=inputs.denoising_samplers)},
        inputs.wanted)  # fmt: skip


def _frames(path: Path) -> int | None:
    if not path.exists():
        return None
    from PIL import Image

    with Image.open(path) as im:
        return im.n_frames


def section(inputs) -> str:
    n_frames = _frames(inputs.figures_dir / f"{FIGURES[0]}.gif")
    frames = f"{n_frames} frames, " if n_frames else ""
    return (
        "## Animation\n\n"
        f"`figures/{FIGURES[0]}.gif` ({frames}one per snapshot, then the final samples): the first 256 chains of "
        "annealed Langevin for each cell (first seed) moving through the σ levels, largest first, each frame over "
        "the perturbed density p_σ of its level (where the density is known); the last frame shows the final "
        "samples, after the denoising step when the sampler has one.\n"
    )
