"""scorebench: reproducible benchmark studies of score-based generative models.

Layers (each imports only from layers below it) are drawn in ../shared/design.md:
noise/data/results/checkpoint -> losses/sampling/models/metrics -> train/evaluate/report
-> study (the only reader of config) -> cli (one verb per workflow rule).
"""

__version__ = "0.1.0"
