"""A finished cell's score network, loaded from its model.pt and called as a score function.

Every job after training (sample, score error, score field, grouped evaluation) starts from the
same two steps: rebuild the network from the file's `model_config` and load its EMA or raw weights;
then call it as `score_fn(x, σ)` without gradients, on its device, handing the score back where x
lives. The oracle's model.pt holds no weights: it is rebuilt from the dataset's exact distribution.
"""

from __future__ import annotations

from scorebench.checkpoint import load_checkpoint
from scorebench.errors import ScorebenchError
from scorebench.models import model_from_config
from scorebench.readers import redo_hint


def load_score_model(model_path, distribution, *, weights: str = "ema", device="cpu"):
    """The trained score network of a cell (EMA or raw weights), in eval mode on `device`.

    Args:
        model_path: the cell's model.pt.
        distribution: the dataset's exact distribution (only the oracle uses it).
        weights: "ema" (falls back to raw where the file has no EMA) or "raw".

    Returns:
        (model, the file's dict).
    """
    ckpt = load_checkpoint(model_path, expect_keys=("model_config",), fix=redo_hint(model_path))
    config = ckpt["model_config"]
    model = model_from_config(config, distribution=distribution)
    if config.get("arch") != "oracle":
        key = "ema" if weights == "ema" and ckpt.get("ema") is not None else "model"
        try:
            model.load_state_dict(ckpt[key])
        except (RuntimeError, KeyError) as exc:
            raise ScorebenchError(
                f"checkpoint {model_path}: does not fit its model config ({exc}); {redo_hint(model_path)}"
            ) from None
    return model.to(device).eval(), ckpt


def score_fn_on(model, device, *, amp: str = "off", channels_last: bool = False):
    """`score_fn(x, σ)` for samplers and metrics: the model runs on its device without gradients, in
    float32, and the score comes back where x lives, in x's dtype.

    `amp` runs the model under `scorebench.device.autocast` ("auto": bf16 on CUDA); `channels_last`
    hands 4-D inputs over in NHWC memory order, which convolutions on tensor cores prefer (convert
    the model with `model.to(memory_format=torch.channels_last)` as well).
    """
    import torch

    from scorebench.device import autocast

    def score_fn(x, s):
        xin = x.to(device, torch.float32)
        if channels_last and xin.dim() == 4:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(device, amp):
            out = model(xin, s.to(device, torch.float32))
        return out.to(x.device, x.dtype)

    return score_fn
