"""A functional BERT classifier forward pass that computes only what the losses read.

Every loss of the method reads the last layer at the [CLS] positions only (pooler, then
head), and [CLS] attention labels read only the [CLS] query row of each layer's attention.
So the last layer runs its query, attention output and feed-forward on the [CLS] positions
alone (keys and values still cover every token): about 5/6 of the last layer's work is
skipped in every pass, the real batches, evaluation and the twice-differentiated synthetic
pass alike. It is the same function as Hugging Face's `BertForSequenceClassification`
(tests/test_encoder.py compares the two in float64); models it does not cover use the
Hugging Face path.

Beyond the paper, `pooling="mean"` classifies the mean of the last layer over each example's tokens
instead of the pooler at [CLS]: the pooling sentence-transformers models such as the bundled
all-MiniLM-L6-v2 were trained with. The last layer then runs on every position, and the pooler is
not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adjoint_fold import FoldSlot
from .adjoint_fold import linear as fold_linear

__all__ = ["EncoderSpec", "POOLINGS", "spec_for", "bert_classifier"]

POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class EncoderSpec:
    num_layers: int
    num_heads: int
    eps: float
    prefix: str = "bert."
    pooling: str = "cls"   # "cls": pooler at [CLS] (the paper); "mean": mean of the last layer over the tokens


def spec_for(module: torch.nn.Module, pooling: str = "cls") -> EncoderSpec | None:
    """The spec of a plain BERT classifier (absolute positions, exact GELU), or None for anything else."""
    cfg = getattr(module, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "bert" or getattr(cfg, "is_decoder", False):
        return None
    if getattr(cfg, "hidden_act", None) != "gelu" or getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return None
    bert = getattr(module, "bert", None)
    if bert is None or getattr(bert, "pooler", None) is None or not isinstance(getattr(module, "classifier", None),
                                                                                   torch.nn.Linear):
        return None
    return EncoderSpec(int(cfg.num_hidden_layers), int(cfg.num_attention_heads), float(cfg.layer_norm_eps),
                       pooling=pooling)


def _linear(x: torch.Tensor, p: dict, name: str, slot: FoldSlot | None = None) -> torch.Tensor:
    if slot is None:
        return F.linear(x, p[name + ".weight"], p[name + ".bias"])
    return fold_linear(x, p[name + ".weight"], p[name + ".bias"], slot, name + ".weight")


def _norm(x: torch.Tensor, p: dict, name: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), p[name + ".weight"], p[name + ".bias"], eps)


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(R, S, H) -> (R, n, S, H/n)"""
    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def _attend(q, k, v, mask, eager: bool):
    """Context (R, S_q, H) and, when eager, the attention LOG-probabilities (R, n, S_q, S_k).

    Log-probabilities from log_softmax, so the attention KL needs no clamp before its log: where a
    label has mass and the model has almost none, the loss and its gradient stay exact.
    """
    if eager:  # plain ops: differentiable twice, and the log-probabilities are returned
        scores = torch.matmul(q, k.transpose(2, 3)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        log_probs = scores.log_softmax(-1)
        ctx = torch.matmul(log_probs.exp(), v)
    else:
        log_probs = None
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return ctx.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1), log_probs


def _cls_slots(cls_index: torch.Tensor, rows: int, width: int):
    """Row of each [CLS], its slot among the row's [CLS] positions, and the most [CLS] in one row."""
    row = torch.div(cls_index, width, rounding_mode="floor")
    counts = torch.bincount(row, minlength=rows)
    perm = torch.argsort(row, stable=True)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(row)
    slot[perm] = torch.arange(len(row), device=row.device) - start[row[perm]]
    return row, slot, int(counts.max())


def _mean_pool(h: torch.Tensor, mask, cls_index) -> torch.Tensor:
    """(B, H): the mean of the last layer over each example's own tokens (sentence-transformers' pooling).

    Padded rows average over the key mask; packed rows over the tokens each [CLS] may attend to, which
    the block-diagonal mask makes exactly that example's own tokens.
    """
    if mask is None:
        return h.mean(1)
    if cls_index is None:
        keep = mask[:, 0, 0, :].to(h.dtype)                          # (R, S): [CLS]'s row is the key mask
        return (keep.unsqueeze(1) @ h).squeeze(1) / keep.sum(1, keepdim=True)
    R, W = h.shape[0], h.shape[1]
    row, slot, c_max = _cls_slots(cls_index, R, W)
    keep = h.new_zeros((R, c_max, W))
    keep[row, slot] = mask[row, 0, cls_index - row * W].to(h.dtype)   # each example's tokens, in its slot
    sums = torch.bmm(keep, h)                                          # (R, C_max, H)
    return sums[row, slot] / keep[row, slot].sum(1, keepdim=True)


def _layer(p: dict, name: str, spec: EncoderSpec, h: torch.Tensor, mask, eager: bool, cls_index=None,
           cls_only: bool = False, fold: FoldSlot | None = None):
    """One BERT layer. cls_only: queries (and everything after attention) only at the [CLS] positions."""
    a = name + ".attention."
    k = _heads(_linear(h, p, a + "self.key", fold), spec.num_heads)
    v = _heads(_linear(h, p, a + "self.value", fold), spec.num_heads)
    if not cls_only:
        q = _heads(_linear(h, p, a + "self.query", fold), spec.num_heads)
        ctx, log_probs = _attend(q, k, v, mask, eager)
        resid = h
    elif cls_index is None:  # [CLS] is position 0 of every row
        resid = h[:, :1]
        q = _heads(_linear(resid, p, a + "self.query", fold), spec.num_heads)
        ctx, log_probs = _attend(q, k, v, None if mask is None else mask[:, :, :1], eager)
    else:  # packed rows: several [CLS] per row, gathered into slots (R, C_max)
        R, W = h.shape[0], h.shape[1]
        row, slot, c_max = _cls_slots(cls_index, R, W)
        resid_flat = h.reshape(R * W, -1).index_select(0, cls_index)
        q_flat = _linear(resid_flat, p, a + "self.query", fold)
        q_slots = q_flat.new_zeros((R, c_max, q_flat.shape[-1]))
        q_slots[row, slot] = q_flat
        pos = cls_index - row * W
        m = torch.zeros((R, 1, c_max, W), dtype=torch.bool, device=h.device)
        m[:, :, :, 0] = True  # empty slots attend somewhere (no NaN); they are dropped below
        m[row, 0, slot] = mask[row, 0, pos]
        ctx_slots, log_probs = _attend(_heads(q_slots, spec.num_heads), k, v, m, eager)
        ctx = ctx_slots[row, slot]
        resid = resid_flat
    h = _norm(_linear(ctx, p, a + "output.dense", fold) + resid, p, a + "output.LayerNorm", spec.eps)
    inter = F.gelu(_linear(h, p, name + ".intermediate.dense", fold))
    h = _norm(_linear(inter, p, name + ".output.dense", fold) + h, p, name + ".output.LayerNorm", spec.eps)
    return h, log_probs


def bert_classifier(spec: EncoderSpec, params: dict, *, inputs_embeds: torch.Tensor | None = None,
                    input_ids: torch.Tensor | None = None, word_embeddings: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None, cls_index: torch.Tensor | None = None,
                    attention: str = "none", eager: bool = False, fold_slot: FoldSlot | None = None,
                    attention_log: bool = False, with_pooled: bool = False):
    """Logits (B, C) and the attention the losses read (and, with_pooled, the pooled output (B, D) third).

    mask: (R, 1, S, S) or (R, 1, 1, S) bool, True = may attend (None: all tokens).
    cls_index: flat [CLS] positions of packed rows (None: position 0 of each row).
    attention: "none"; "cls" returns the [CLS] query rows (B, K, H, S); "all" every row (B, K, H, S, S)
    (then the last layer runs on every position). Attention probabilities need eager=True;
    attention_log=True returns them as log-probabilities (exact, from log_softmax).
    fold_slot: build the linears so that a reverse step can fold their part of H_t a into the adjoint
    (distill_core.adjoint_fold); for a synthetic pass that will be differentiated twice.
    """
    if attention != "none" and not eager:
        raise ValueError("attention probabilities need eager=True")
    pre = spec.prefix
    e = pre + "embeddings."
    if inputs_embeds is None:
        inputs_embeds = F.embedding(input_ids, params.get(e + "word_embeddings.weight", word_embeddings))
    R, S = inputs_embeds.shape[0], inputs_embeds.shape[1]
    if position_ids is None:
        position_ids = torch.arange(S, device=inputs_embeds.device).expand(R, S)
    if token_type_ids is None:
        token_type_ids = torch.zeros((R, S), dtype=torch.long, device=inputs_embeds.device)
    h = inputs_embeds + F.embedding(token_type_ids, params[e + "token_type_embeddings.weight"])
    h = h + F.embedding(position_ids, params[e + "position_embeddings.weight"])
    h = _norm(h, params, e + "LayerNorm", spec.eps)
    rows = []
    for i in range(spec.num_layers):
        last = i == spec.num_layers - 1
        h, log_probs = _layer(params, f"{pre}encoder.layer.{i}", spec, h, mask, eager, cls_index,
                          cls_only=last and attention != "all" and spec.pooling == "cls", fold=fold_slot)
        if attention == "cls":
            rows.append(log_probs[:, :, 0])
        elif attention == "all":
            rows.append(log_probs)
    if spec.pooling == "mean":
        pooled = _mean_pool(h, mask, cls_index)
    else:
        if cls_index is not None:
            cls = h if h.dim() == 2 else h.reshape(-1, h.shape[-1]).index_select(0, cls_index)
        else:
            cls = h[:, 0]
        pooled = torch.tanh(_linear(cls, params, pre + "pooler.dense", fold_slot))
    logits = _linear(pooled, params, "classifier", fold_slot)
    out_rows = None
    if rows:
        log_rows = torch.stack(rows, dim=1)
        out_rows = log_rows if attention_log else log_rows.exp()
    return (logits, out_rows, pooled) if with_pooled else (logits, out_rows)
