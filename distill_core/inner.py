"""The inner loop (fine-tuning a learner on distilled data) and its exact hypergradient.

Notation (METHOD.md): theta_{t+1} = theta_t - eta_t * G_t,  G_t = grad_theta L_in(theta_t, D_t),
L_in = L_task + lambda * L_attn on the synthetic batch of step t; L_out = cross-entropy of
f(theta_T) on a real batch.

`hypergradient` computes dL_out/dD exactly by reverse-mode accumulation through the T
steps, one step at a time:
    a_T = dL_out/dtheta_T                                   (first order, fused attention)
    a_t = a_{t+1} - eta_t * H_t a_{t+1}                     (Hessian-vector product)
    dL_out/dD_t   = -eta_t * d<a_{t+1}, G_t>/dD_t           (mixed second derivative)
    dL_out/deta_t = -<a_{t+1}, G_t>
Only the synthetic pass is differentiated twice (eager attention); the real batch needs
one backward pass, so it runs with fused attention on packed (or length-sorted) batches.
Two memory modes give the same gradient: keep each inner step's graph (fastest), or keep
O(log T) parameter copies and recompute the steps in between (memory flat in T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import PackedBatch, RealBatch
from .distilled import DistilledData, StepBatch
from .learner import Learner, Params
from .losses import attention_kl, soft_cross_entropy

__all__ = ["InnerLoss", "inner_loss", "fine_tune", "real_loss_and_grad", "hypergradient", "HyperResult"]


@dataclass
class InnerLoss:
    total: torch.Tensor
    task: torch.Tensor
    attention: torch.Tensor | None


def inner_loss(learner: Learner, params: Params, batch: StepBatch, attention_mode: str,
               attention_weight: float) -> InnerLoss:
    """L_task + lambda * L_attn of the learner with `params` on one synthetic batch."""
    want_attn = batch.attention_logits is not None and attention_mode != "none"
    out = learner.forward(params, inputs_embeds=batch.embeds, output_attentions=want_attn, eager=True)
    task = soft_cross_entropy(out.logits, batch.targets)
    if not want_attn:
        return InnerLoss(task, task, None)
    attn = attention_kl(batch.attention_logits, out.attentions, attention_mode)
    return InnerLoss(task + attention_weight * attn, task, attn)


def _grads(loss: torch.Tensor, params: Params, create_graph: bool = False) -> Params:
    keys = list(params)
    grads = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=create_graph, allow_unused=True)
    return {k: torch.zeros_like(params[k]) if g is None else g for k, g in zip(keys, grads)}


def _leaf(params: Params) -> Params:
    """Fresh leaf views of `params` (no copy) that require grad."""
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


def fine_tune(learner: Learner, theta0: Params, distilled: DistilledData) -> Params:
    """Fine-tune theta0 on the distilled data for T plain SGD steps (first order, as in evaluation)."""
    cfg = distilled.config
    lrs = distilled.inner_lrs().detach()
    theta = theta0
    with torch.enable_grad():
        for t in range(cfg.inner_steps):
            p = _leaf(theta)
            loss = inner_loss(learner, p, distilled.step_batch(t, detach=True), cfg.attention_labels,
                              cfg.attention_loss_weight)
            g = _grads(loss.total, p)
            theta = {k: p[k].detach() - lrs[t] * g[k] for k in p}
    return theta


def real_loss_and_grad(learner: Learner, params: Params, batches: list[RealBatch | PackedBatch],
                       need_grad: bool = True) -> tuple[float, Params | None]:
    """Mean cross-entropy on a real batch (given as micro-batches) and its gradient w.r.t. params."""
    total = sum(len(b) for b in batches)
    p = _leaf(params) if need_grad else params
    grad: Params | None = None
    loss_sum = 0.0
    for b in batches:
        with torch.set_grad_enabled(need_grad):
            logits = learner.real_logits(p, b)
            logits = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
            loss = F.cross_entropy(logits, b.labels, reduction="sum") / total
        loss_sum += float(loss.detach())
        if need_grad:
            g = _grads(loss, p)
            grad = g if grad is None else {k: grad[k] + g[k] for k in grad}
    return loss_sum, grad


@dataclass
class HyperResult:
    real_loss: float                  # L_out at theta_T on the real batch
    grads: dict[str, torch.Tensor]    # d L_out / d (each learnable tensor of the distilled data)
    inner_task_loss: float            # L_task at the last inner step (before its update)
    inner_attention_loss: float | None


STORE_LIMIT = 5  # "auto": keep every theta_t up to this T, recompute beyond it


def hypergradient(learner: Learner, theta0: Params, distilled: DistilledData,
                  real_batches: list[RealBatch | PackedBatch], recompute: bool | None = None) -> HyperResult:
    """Exact dL_out/dD through all T inner steps (see the module docstring).

    recompute=False keeps every inner step's graph (fastest; memory grows with T);
    recompute=True keeps O(log T) copies and recomputes the others by recursive bisection
    (about (T/2) log2 T extra first-order inner steps): memory flat in T, gradient identical.
    None picks recompute for T > STORE_LIMIT.
    """
    cfg = distilled.config
    T = cfg.inner_steps
    recompute = T > STORE_LIMIT if recompute is None else recompute
    learnable = distilled.learnable()
    names = list(learnable)
    mode, lam = cfg.attention_labels, cfg.attention_loss_weight
    lrs = distilled.inner_lrs().detach()
    grads = {name: torch.zeros_like(t) for name, t in learnable.items()}

    def step_forward(theta: Params, t: int, keep_graph: bool = False):
        p = _leaf(theta)
        loss = inner_loss(learner, p, distilled.step_batch(t, detach=not keep_graph), mode, lam)
        g = _grads(loss.total, p, create_graph=keep_graph)
        return {k: p[k].detach() - lrs[t] * g[k].detach() for k in p}, (p, g) if keep_graph else None, loss

    def reverse_step(t: int, theta_t: Params | None, a: Params, kept=None) -> Params | None:
        """Pull the adjoint back through step t; accumulate dL/dD; return dL/dtheta_t (None at t=0)."""
        if kept is not None:
            p, g = kept
        else:
            p = _leaf(theta_t)
            g = _grads(inner_loss(learner, p, distilled.step_batch(t), mode, lam).total, p, create_graph=True)
        eta_t = F.softplus(distilled.lr_raw[t])
        objective = -eta_t * sum((a[k] * g[k]).sum() for k in p)   # theta_{t+1} = theta_t - eta_t * G_t
        wrt = [p[k] for k in p] + [learnable[n] for n in names] if t > 0 else [learnable[n] for n in names]
        outs = torch.autograd.grad(objective, wrt, allow_unused=True)
        if t > 0:
            a = {k: a[k] + (0 if d is None else d.detach()) for k, d in zip(p, outs[: len(p)])}
            outs = outs[len(p):]
        for name, d in zip(names, outs):
            if d is not None:
                grads[name] += d.detach()
        return a if t > 0 else None

    with torch.enable_grad():
        if not recompute:
            # Every step keeps its own (detached-input) graph, so the reverse pass recomputes nothing.
            theta, kept = theta0, []
            for t in range(T):
                theta, graph, last_loss = step_forward(theta, t, keep_graph=True)
                kept.append(graph)
            real_loss, a = real_loss_and_grad(learner, theta, real_batches)
            del theta
            for t in reversed(range(T)):
                a = reverse_step(t, None, a, kept.pop())
        else:
            theta = theta0
            for t in range(T):
                theta, _, last_loss = step_forward(theta, t)
            real_loss, a = real_loss_and_grad(learner, theta, real_batches)
            del theta

            def segment(t0: int, theta_t0: Params, t1: int, a: Params) -> Params | None:
                if t1 - t0 == 1:
                    return reverse_step(t0, theta_t0, a)
                mid = (t0 + t1) // 2
                theta_mid = theta_t0
                for t in range(t0, mid):
                    theta_mid = step_forward(theta_mid, t)[0]
                a = segment(mid, theta_mid, t1, a)
                del theta_mid
                return segment(t0, theta_t0, mid, a)

            segment(0, theta0, T, a)
    return HyperResult(real_loss, grads, float(last_loss.task.detach()),
                       None if last_loss.attention is None else float(last_loss.attention.detach()))
