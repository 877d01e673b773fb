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
Two memory modes give the same gradient: keep each inner step's graph (fastest), or keep a
fixed number of parameter copies and recompute the steps in between (memory flat in T). In both,
the linear weights' part of H_t a goes into the adjoint as it is produced (adjoint_fold).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adjoint_fold import FoldSlot
from .data import PackedBatch, RealBatch
from .distilled import DistilledData, StepBatch
from .learner import Learner, Params
from .presets import BASE
from .losses import attention_kl_rows, soft_cross_entropy

__all__ = ["InnerLoss", "inner_loss", "fine_tune", "LOSS_TERMS", "real_loss_and_grad", "hypergradient", "HyperResult"]


@dataclass
class InnerLoss:
    total: torch.Tensor
    task: torch.Tensor
    attention: torch.Tensor | None
    features: torch.Tensor | None = None


def inner_loss(learner: Learner, params: Params, batch: StepBatch, attention_mode: str,
               attention_weight: float, fold_slot: FoldSlot | None = None,
               feature_weight: float = BASE["distilled"]["feature_loss_weight"]) -> InnerLoss:
    """L_task + lambda * L_attn (+ mu * L_feat with feature labels) of the learner with `params` on one
    synthetic batch. L_feat: the squared distance of each sample's pooled output to its target, summed over
    the hidden size and averaged over samples (beyond the paper)."""
    want_attn = batch.attention_logits is not None and attention_mode != "none"
    want_feat = batch.feature_targets is not None
    out = learner.synthetic_forward(params, batch.embeds, attention_mode if want_attn else "none",
                                    fold_slot, log=True, pooled=want_feat)
    logits, rows = out[0], out[1]
    task = soft_cross_entropy(logits, batch.targets)
    total, attn, feat = task, None, None
    if want_attn:
        attn = attention_kl_rows(batch.attention_logits, rows, attention_mode, log_actual=True).mean()
        total = total + attention_weight * attn
    if want_feat:
        feat = (out[2] - batch.feature_targets).pow(2).sum(-1).mean()
        total = total + feature_weight * feat
    return InnerLoss(total, task, attn, feat)


def _grads(loss: torch.Tensor, params: Params, create_graph: bool = False) -> Params:
    keys = list(params)
    grads = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=create_graph, allow_unused=True)
    return {k: torch.zeros_like(params[k]) if g is None else g for k, g in zip(keys, grads)}


def _leaf(params: Params) -> Params:
    """Fresh leaf views of `params` (no copy) that require grad."""
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


def _release_values(g: Params) -> None:
    """Free the memory of G_t's values once spent (update made, <a, G_t> taken) while its graph lives on.

    The tensors stay the roots of the second backward pass, which reads only their graph and
    shapes, so one parameter set less is alive while H_t a is built. Safe only where no node of
    the graph saved G_t itself: true of the encoder's ops (tests/test_hypergradient.py checks it),
    so other models keep their values.
    """
    for v in g.values():
        try:
            v.untyped_storage().resize_(0)
        except RuntimeError:  # a backend whose storages cannot be resized keeps the values
            return


def _sgd_step(theta: Params, grads: Params, lr: torch.Tensor, in_place: bool = False,
              parts: list[list[str]] | None = None) -> Params:
    """theta - lr * grads in one fused pass per lr (in_place: overwrite theta's tensors). `lr` is one
    lr, or one per parameter group with `parts` (_lr_parts) naming each group's parameters."""
    pairs = [(list(theta), float(lr))] if parts is None else list(zip(parts, lr.tolist()))
    out = theta if in_place else {}
    with torch.no_grad():
        for keys, value in pairs:
            if not keys:
                continue
            step = [grads[k].detach() for k in keys]
            if in_place:
                torch._foreach_add_([theta[k] for k in keys], step, alpha=-value)
            else:
                out.update(zip(keys, torch._foreach_add([theta[k].detach() for k in keys], step, alpha=-value)))
    return out if in_place else {k: out[k] for k in theta}


def _lr_parts(distilled: DistilledData, theta: Params) -> list[list[str]] | None:
    """The learner's parameters of each inner-lr group, in parameter order (None: one lr per step);
    computed once per fine-tuning or hypergradient, not at every step."""
    group = distilled.lr_group_index(theta)
    if group is None:
        return None
    return [[k for k in theta if group[k] == g] for g in range(len(distilled.lr_groups))]


LOSS_TERMS = ("task", "attention", "features")


def _weighted_terms(loss: InnerLoss, terms: tuple[str, ...], attention_weight: float,
                    feature_weight: float) -> torch.Tensor:
    """The named parts of an inner loss, with their weights (a part the data lacks adds nothing)."""
    unknown = set(terms) - set(LOSS_TERMS)
    if unknown:
        raise ValueError(f"unknown inner-loss terms {sorted(unknown)}; known: {', '.join(LOSS_TERMS)}")
    out = 0.0 * loss.task     # keeps the graph when no named part is present: a zero step
    if "task" in terms:
        out = out + loss.task
    if "attention" in terms and loss.attention is not None:
        out = out + attention_weight * loss.attention
    if "features" in terms and loss.features is not None:
        out = out + feature_weight * loss.features
    return out


def fine_tune(learner: Learner, theta0: Params, distilled: DistilledData,
              terms: tuple[str, ...] | None = None) -> Params:
    """Fine-tune theta0 on the distilled data for T plain SGD steps (first order, as in evaluation).

    terms: only these parts of the inner loss (LOSS_TERMS) drive the steps, a diagnostic of what each
    part teaches (step_anatomy); None, the method: all of it."""
    cfg = distilled.config
    lrs = distilled.inner_lrs().detach()
    parts = _lr_parts(distilled, theta0)
    theta = theta0
    with torch.enable_grad():
        for t in range(cfg.inner_steps):
            p = _leaf(theta)
            loss = inner_loss(learner, p, distilled.step_batch(t, detach=True), cfg.attention_labels,
                              cfg.attention_loss_weight, feature_weight=cfg.feature_loss_weight)
            objective = loss.total if terms is None else _weighted_terms(loss, terms, cfg.attention_loss_weight,
                                                                         cfg.feature_loss_weight)
            theta = _sgd_step(p, _grads(objective, p), lrs[t], parts=parts)   # the distiller's inner update too
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
            # float targets: rows of class probabilities (a teacher's mix, distill_core/teacher.py)
            targets = b.labels.to(logits.dtype) if b.labels.is_floating_point() else b.labels
            loss = F.cross_entropy(logits, targets, reduction="sum") / total
        loss_sum += float(loss.detach())
        if need_grad:
            g = _grads(loss, p)
            grad = g if grad is None else {k: grad[k] + g[k] for k in grad}
    return loss_sum, grad


def _loss_values(loss: InnerLoss) -> tuple[float, float | None]:
    return float(loss.task.detach()), None if loss.attention is None else float(loss.attention.detach())


@dataclass
class HyperResult:
    real_loss: float                  # L_out at theta_T on the real batch
    grads: dict[str, torch.Tensor]    # d L_out / d (each learnable tensor of the distilled data)
    inner_task_loss: float            # L_task at the last inner step (before its update)
    inner_attention_loss: float | None

    def plus(self, other: "HyperResult") -> "HyperResult":
        """The sum of two draws' results (gradients added in place into self's tensors)."""
        for k, g in other.grads.items():
            self.grads[k].add_(g)
        attn = (None if self.inner_attention_loss is None or other.inner_attention_loss is None
                else self.inner_attention_loss + other.inner_attention_loss)
        return HyperResult(self.real_loss + other.real_loss, self.grads,
                           self.inner_task_loss + other.inner_task_loss, attn)

    def scaled(self, w: float) -> "HyperResult":
        for g in self.grads.values():
            g.mul_(w)
        return HyperResult(self.real_loss * w, self.grads, self.inner_task_loss * w,
                           None if self.inner_attention_loss is None else self.inner_attention_loss * w)


STORE_LIMIT = 5  # "auto": keep every theta_t up to this T, recompute beyond it
# Parameter copies the recompute mode keeps besides theta_0 (which aliases the pre-trained weights):
# bisection while copies last, then each theta_t is recomputed from the nearest copy. Each copy costs
# one parameter set of memory and saves recomputed first-order steps: at T=20, 0 copies redo 190
# steps, 1 copy 100, 2 copies 52.
RECOMPUTE_COPIES = BASE["distill"]["recompute_copies"]  # parameter copies kept in recompute mode (presets.BASE)


def hypergradient(learner: Learner, theta0: Params, distilled: DistilledData,
                  real_batches: list[RealBatch | PackedBatch], recompute: bool | None = None,
                  copies: int = RECOMPUTE_COPIES, real_precision: str = "float32") -> HyperResult:
    """Exact dL_out/dD through all T inner steps (see the module docstring).

    real_precision="bfloat16" runs the real-batch pass (L_out and its first-order gradient at theta_T)
    under bf16 autocast; the synthetic passes, differentiated twice, stay in the learner's dtype. Not
    exact any more, but close (bench/outer_step.py --real-precision bfloat16 reports the cosine).

    recompute=False keeps every inner step's graph (fastest; memory grows with T);
    recompute=True keeps at most `copies` parameter copies (recursive bisection, then
    recomputation from the nearest copy) and a single adjoint, updated in place: memory flat in T,
    gradient identical.
    None picks recompute for T > STORE_LIMIT.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    cfg = distilled.config
    T = cfg.inner_steps
    recompute = T > STORE_LIMIT if recompute is None else recompute
    learnable = distilled.learnable()
    names = list(learnable)
    mode, lam, mu = cfg.attention_labels, cfg.attention_loss_weight, cfg.feature_loss_weight
    lrs = distilled.inner_lrs().detach()
    parts = _lr_parts(distilled, theta0)   # None: one lr per step (the paper)
    grads = {name: torch.zeros_like(t) for name, t in learnable.items()}
    data_names = [n for n in names if n != "lr"]   # the lr's gradient is a scalar path of its own

    def fold_slot(t: int) -> FoldSlot | None:
        """For a synthetic pass a reverse step will differentiate twice (engine encoder only)."""
        return FoldSlot(weights=t > 0) if learner.encoder_spec is not None else None

    def step_forward(theta: Params, t: int, keep_graph: bool = False, in_place: bool = False):
        """theta_{t+1}; in_place overwrites `theta` (only for a copy nobody else holds)."""
        p = _leaf(theta)
        slot = fold_slot(t) if keep_graph else None
        loss = inner_loss(learner, p, distilled.step_batch(t, detach=not keep_graph), mode, lam, slot, mu)
        g = _grads(loss.total, p, create_graph=keep_graph)
        if in_place:
            return _sgd_step(theta, g, lrs[t], in_place=True, parts=parts), None, loss
        return _sgd_step(p, g, lrs[t], parts=parts), (p, g, slot) if keep_graph else None, loss

    def reverse_step(t: int, theta_t: Params | None, a: Params, kept=None) -> None:
        """Pull the adjoint `a` (dL/dtheta_{t+1}) back through step t in place; accumulate dL/dD."""
        if kept is not None:
            p, g, slot = kept
        else:
            p = _leaf(theta_t)
            slot = fold_slot(t)
            g = _grads(inner_loss(learner, p, distilled.step_batch(t), mode, lam, slot, mu).total, p, create_graph=True)
        keys = list(p)
        lr_raw = distilled.lr_raw
        # d/d lr_raw[t] of -eta_t * <a, G_t>: a scalar (one per group), so the eta path needs no
        # parameter-sized graph.
        def dot(names) -> torch.Tensor:
            return sum((torch.dot(a[k].reshape(-1), g[k].detach().reshape(-1)) for k in names),
                       torch.zeros((), dtype=lr_raw.dtype, device=lr_raw.device))

        dots = dot(keys) if parts is None else torch.stack([dot(part) for part in parts])
        (d_lr,) = torch.autograd.grad(-(distilled.lr_from_raw(lr_raw[t]) * dots).sum(), [lr_raw])
        if learner.encoder_spec is not None:
            _release_values(g)
        grads["lr"] += d_lr.detach()
        eta_t = distilled.lr_from_raw(lr_raw[t].detach())
        if parts is None:
            # v = d<a, G_t>/d(theta_t, D): the adjoint enters as grad_outputs, so no scaled copy of it
            # (one parameter set) is made; eta_t scales what comes out.
            seed, scale = [a[k] for k in keys], -float(eta_t)
        else:
            # one lr per group: theta_{t+1} = theta_t - E G_t with E diagonal, so the pass is seeded with
            # E a (one scaled copy of the adjoint) and what comes out is added as it is.
            eta_of = {k: eta for part, eta in zip(parts, eta_t.tolist()) for k in part}
            seed, scale = [a[k] * eta_of[k] for k in keys], -1.0
        # The parameter part is needed only for t > 0. The linear weights' part goes into a as it is
        # produced (adjoint_fold), the rest is returned.
        folded = set(slot.keys) if slot is not None else set()   # empty at t = 0
        returned = [k for k in keys if k not in folded] if t > 0 else []
        wrt = [p[k] for k in returned] + [learnable[n] for n in data_names]
        fold = (slot.armed(a, scale, roots=g) if slot is not None
                else contextlib.nullcontext())
        with fold:
            outs = torch.autograd.grad([g[k] for k in keys], wrt, grad_outputs=seed, allow_unused=True)
        del g, kept, fold, seed
        if t > 0:
            # a_t = a_{t+1} - eta_t H_t a_{t+1} (or - H_t E a_{t+1}), in place: one adjoint lives at a time.
            pairs = [(a[k], v) for k, v in zip(returned, outs[: len(returned)]) if v is not None]
            with torch.no_grad():
                torch._foreach_add_([x for x, _ in pairs], [v for _, v in pairs], alpha=scale)
            del pairs
            outs = outs[len(returned):]
        for name, v in zip(data_names, outs):
            if v is not None:
                grads[name].add_(v.detach(), alpha=scale)

    with torch.enable_grad():
        if not recompute:
            # Every step keeps its own (detached-input) graph, so the reverse pass recomputes nothing.
            theta, kept = theta0, []
            for t in range(T):
                theta, graph, loss = step_forward(theta, t, keep_graph=True)
                kept.append(graph)
            last_losses = _loss_values(loss)
            del loss, graph
            with learner.autocast(real_precision):
                real_loss, a = real_loss_and_grad(learner, theta, real_batches)
            del theta
            for t in reversed(range(T)):
                reverse_step(t, None, a, kept.pop())
        else:
            theta = theta0
            for t in range(T):
                theta, _, loss = step_forward(theta, t, in_place=t > 0)
            # Floats only: the loss tensor's graph holds the last step's leaves, i.e. theta_T's memory.
            last_losses = _loss_values(loss)
            del loss
            with learner.autocast(real_precision):
                real_loss, a = real_loss_and_grad(learner, theta, real_batches)
            del theta

            def advance(theta: Params, t0: int, t1: int) -> Params:
                """theta_t1 from theta_t0 (left untouched): a new copy, then updated in place."""
                for t in range(t0, t1):
                    theta = step_forward(theta, t, in_place=t > t0)[0]
                return theta

            def segment(t0: int, theta_t0: Params, t1: int, slots: int) -> None:
                """Reverse steps t1-1 .. t0, given theta_t0 and `slots` more parameter copies to keep."""
                if t1 - t0 == 1:
                    return reverse_step(t0, theta_t0, a)
                if slots == 0:   # out of copies: recompute each theta_t from theta_t0
                    for t in reversed(range(t0, t1)):
                        reverse_step(t, advance(theta_t0, t0, t), a)
                    return
                mid = (t0 + t1) // 2
                segment(mid, advance(theta_t0, t0, mid), t1, slots - 1)
                segment(t0, theta_t0, mid, slots)

            segment(0, theta0, T, copies)
            # segment refers to itself through its closure; that cycle would keep the adjoint (one
            # parameter set) alive until the next garbage collection instead of freeing it here.
            del segment
    return HyperResult(real_loss, grads, *last_losses)
