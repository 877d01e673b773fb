"""A straightforward (reference-style) outer step, for before/after comparisons in one run.

It does what the paper's reference code does, written plainly: every parameter (the
word-embedding matrix too) goes through the inner update with create_graph=True, the whole
unrolled graph is kept, eager attention everywhere, and the real batch is padded to its
longest example. Its gradient is the engine's gradient (tests/test_hypergradient.py uses the
same construction as its reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_core.data import collate
from distill_core.inner import inner_loss
from distill_core.losses import soft_cross_entropy


def reference_hypergradient(learner, distilled, encoded_train, indices, head_generator) -> tuple[float, dict]:
    cfg = distilled.config
    params = learner.fresh_params(head_generator)
    params[learner.word_embedding_name] = learner.word_embeddings()
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    lrs = F.softplus(distilled.lr_raw)
    for t in range(cfg.inner_steps):
        loss = inner_loss(learner, params, distilled.step_batch(t), cfg.attention_labels, cfg.attention_loss_weight,
                          feature_weight=cfg.feature_loss_weight)
        keys = list(params)
        gs = torch.autograd.grad(loss.total, [params[k] for k in keys], create_graph=True, allow_unused=True)
        params = {k: params[k] - lrs[t] * (torch.zeros_like(params[k]) if g is None else g) for k, g in zip(keys, gs)}
    batch = collate(encoded_train, indices).to(learner.device)
    out = learner.forward(params, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          token_type_ids=batch.token_type_ids, output_attentions=False, eager=True)
    real = soft_cross_entropy(out.logits, batch.labels)
    learnable = distilled.learnable()
    grads = torch.autograd.grad(real, list(learnable.values()))
    return float(real.detach()), dict(zip(learnable, grads))
