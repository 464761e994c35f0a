"""Evaluation metrics: sample quality and score accuracy.

Submodules are imported where used, so a toy job never loads torch-fidelity:
- toy.py: MMD, sliced Wasserstein and mode weights/coverage for 2-D toys;
- score_error.py: ‖s_θ − ∇log p_σ‖² per σ and per density bin against the exact score;
- score_field.py: a model's and the exact score on a 2-D grid at each σ (quiver figures);
- fidelity.py, feature_net.py: FID/KID/IS through torch-fidelity for images.
"""
