"""The one loss module: task cross-entropy with soft targets and the [CLS] attention KL.

Used by the distiller (inner loop and real-data loss) and the evaluator alike, so the two
can never drift apart.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["soft_cross_entropy", "attention_kl", "attention_kl_per_head", "attention_kl_rows", "attention_rows",
           "kl_to_attention", "kl_between_logs", "ATTENTION_MODES"]

ATTENTION_MODES = ("none", "cls", "all")
_TINY = 1e-12  # where only probabilities exist (Hugging Face modules, inspection), they are clamped before the log


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; `targets` are class ids (long) or per-class target weights (float).

    Float targets may be a distribution (soft labels) or raw real values (unrestricted labels):
    the loss is -sum_c y_c log p_c either way, as in METHOD.md.
    """
    if targets.dtype == torch.long:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def attention_kl_per_head(label_logits: torch.Tensor, attentions: Sequence[torch.Tensor],
                          mode: str = "cls") -> torch.Tensor:
    """KL(label || actual) per sample, layer and head: shape (B, K, H).

    label_logits: (B, K, H, L) for mode "cls" (target for the [CLS] query, position 0),
                  (B, K, H, L, L) for mode "all" (every query row; KL averaged over rows).
    attentions:   K tensors (B, H, L, L) of attention probabilities from the model.
    """
    return attention_kl_rows(label_logits, attention_rows(attentions, mode), mode)


def attention_rows(attentions: Sequence[torch.Tensor], mode: str = "cls") -> torch.Tensor:
    """The K per-layer attention maps (B, H, L, L) stacked to what mode's labels compare with:
    (B, K, H, L) [CLS] query rows for "cls", (B, K, H, L, L) for "all"."""
    actual = torch.stack(tuple(attentions), dim=1)                    # (B, K, H, L, L)
    return actual[..., 0, :] if mode == "cls" else actual


def attention_kl_rows(label_logits: torch.Tensor, actual: torch.Tensor, mode: str = "cls",
                      log_actual: bool = False) -> torch.Tensor:
    """KL per sample, layer and head (B, K, H), from the model's attention rows already stacked.

    actual: (B, K, H, L) [CLS] query rows for mode "cls", (B, K, H, L, L) for mode "all"; probabilities,
    or log-probabilities with log_actual=True (exact: no clamp before the log).
    """
    if mode not in ("cls", "all"):
        raise ValueError(f"attention mode must be 'cls' or 'all', got {mode!r}")
    log_target = F.log_softmax(label_logits, dim=-1)
    kl = kl_between_logs(log_target, actual) if log_actual else kl_to_attention(log_target, actual)
    if mode == "all":
        kl = kl.mean(-1)                                              # mean over query rows
    return kl


def kl_between_logs(log_target: torch.Tensor, log_actual: torch.Tensor) -> torch.Tensor:
    """KL(target || actual) over the last dim, both given as log-probabilities (exact)."""
    return (log_target.exp() * (log_target - log_actual)).sum(-1)


def kl_to_attention(log_target: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """KL(target || actual) over the last dim; target given as log-probabilities, actual as probabilities."""
    return (log_target.exp() * (log_target - actual.clamp_min(_TINY).log())).sum(-1)


def attention_kl(label_logits: torch.Tensor, attentions: Sequence[torch.Tensor], mode: str = "cls") -> torch.Tensor:
    """L_attn = mean over samples of (1/K) sum_k (1/H) sum_h KL(A~_{k,h} || A_{k,h})."""
    return attention_kl_per_head(label_logits, attentions, mode).mean()
