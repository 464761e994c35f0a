"""What paper studies require of a config, written as the reason their `check` gives when it is
missing: shared where several studies need the same thing (a 2-D toy to draw in the plane)."""

from __future__ import annotations

from scorebench.data.registry import TOY_DATASETS

PLANAR_TOYS = ", ".join(k for k in TOY_DATASETS if k != "gmm_nd") + ", gmm_nd with dim 2"


def missing_planar_toy(study) -> str | None:
    """Why a study without a 2-D toy dataset cannot be drawn in the plane (None when it has one)."""
    if any(study.is_2d_toy(d) for d in study.config["datasets"]):
        return None
    return f"needs a 2-D toy dataset ({PLANAR_TOYS})"


def common_sigmas(study) -> list[float]:
    """The study-wide σ list every cell's score error is also evaluated at (evaluation.score_error.common_sigmas):
    what a comparison across schedules reads."""
    return [float(s) for s in study.config["evaluation"]["score_error"].get("common_sigmas") or []]
