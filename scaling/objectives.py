"""Training objectives: how one step's loss comes from a batch of the corpus.

The step loop in train.py is the same for every objective; only this differs. The base
ladder trains causal language models (next-token cross-entropy). Other objectives are
interventions on the ladder (knowledge distillation from a teacher, masked language
modelling), each in a module of its own, chosen here from the config.

An objective's `loss(model, x, y, step)` gets the batch already on the device and the step
number, so that anything random it draws (e.g. which positions to mask) depends on the step
alone and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import torch


class CausalLM:
    """Next-token cross-entropy: the base ladder's objective (the model computes it)."""

    name = "clm"

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """Mean cross-entropy of `y` (x shifted by one) given `x`."""
        _, loss = model(x, y)
        return loss


def make_objective(cfg, plan, device: torch.device):
    """The objective a run trains with, from its config."""
    if cfg.train.teacher:  # knowledge distillation (scaling/distill.py)
        from scaling.distill import Distillation

        return Distillation.from_config(cfg, device)
    if cfg.model.objective == "mlm":  # masked language modelling (scaling/mlm.py)
        import torch.distributed as dist

        from scaling.mlm import MaskedLM, mask_id

        rank, world = ((dist.get_rank(), dist.get_world_size()) if dist.is_initialized()
                       else (0, 1))
        return MaskedLM(cfg.train.seed, mask_id(plan.model_config), rank, world)
    return CausalLM()


def model_config_for(cfg, gcfg):
    """The network an objective trains from a rung's GPTConfig: the rung itself, or for
    mlm its encoder (one more id, [MASK], and bidirectional attention: scaling/mlm.py)."""
    if cfg.model.objective == "mlm":
        from scaling.mlm import encoder_config

        return encoder_config(gcfg)
    return gcfg


def validation_batch_loss(model, x: torch.Tensor, y: torch.Tensor, first_row: int
                          ) -> torch.Tensor:
    """Mean validation loss of windows x (B, T) (y: their next tokens; first_row: the index
    of x's first window in the validation shard) under the model's own objective: next-token
    cross-entropy for a decoder; for an encoder the masked-token loss, with masks drawn
    from each window's index alone (scaling/mlm.py)."""
    if getattr(model.cfg, "causal", True):
        _, loss = model(x, y)
        return loss
    from scaling.mlm import validation_loss

    return validation_loss(model, x, first_row)
