"""Fold the weight part of H_t a into the adjoint as each piece is produced.

In a reverse step the second backward pass builds d<a, G_t>/dtheta_t, and each linear weight W
receives two contributions: one from the inner backward pass (dX = dY W) early in the pass, one
from the forward pass (Y = X W^T) late in it. Autograd holds the first until the second arrives,
so a whole parameter set of partial sums is alive at the end of every reverse step; then it is
added into the adjoint. Here each contribution, a product of two activation-sized factors, is
accumulated straight into the adjoint (scaled by -eta_t, one addmm_) where it would have been made,
so that set is never alive, and no weight-sized piece is built and added afterwards either: it is
what keeps memory flat in T when the inner steps are recomputed, and the fused product is faster
than a product plus an add. The arithmetic is the same (the sum is only regrouped).

The adjoint a is also the pass's input (grad_outputs): a[W] is read once, by the node that made
G_t[W]. A contribution that arrives before that node has run is computed, held back and added just
after it, so the result never depends on the engine's order.

The synthetic pass builds its linears with `linear()` and a `FoldSlot` when its graph will be
differentiated twice; the slot is armed only for the reverse step's pass (`FoldSlot.armed`), so
the inner backward pass (which computes G_t) gets the usual gradients.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.autograd import Function

__all__ = ["FoldSlot", "linear"]


class FoldSlot:
    """The meeting point of one inner step's graph and the reverse step that differentiates it."""

    def __init__(self, weights: bool):
        # weights: the reverse step needs the weight part of H_t a (steps t > 0). Then the graph routes
        # the inner backward pass's uses of each weight through _WeightUse and an armed pass folds both
        # pieces; otherwise an armed pass computes no weight gradient at all.
        self.weights = weights
        self.keys: list[str] = []            # the weights built through linear(), in order
        self.adjoint: dict[str, torch.Tensor] | None = None
        self.scale = 0.0
        self._read: set[str] = set()
        self._held: dict[str, list[torch.Tensor]] = {}

    @contextlib.contextmanager
    def armed(self, adjoint: dict[str, torch.Tensor], scale: float,
              roots: dict[str, torch.Tensor]) -> Iterator[None]:
        """Fold into `adjoint` (times `scale`) during the pass; roots: G_t's weight entries (their nodes read a)."""
        self.adjoint, self.scale = adjoint, scale
        self._read, self._held = set(), {}
        handles = []
        for key in self.keys:   # empty unless self.weights
            node = roots[key].grad_fn
            if node is None:   # G_t[key] does not depend on anything differentiated: a is never read
                self._read.add(key)
            else:
                handles.append(node.register_hook(self._reader_done(key)))
        try:
            yield
            for key in list(self._held):   # a node that was never run did not read a
                self._mark_read(key)
        finally:
            for h in handles:
                h.remove()
            self.adjoint, self._held = None, {}

    def _reader_done(self, key: str):
        def hook(grad_inputs, grad_outputs):
            self._mark_read(key)
        return hook

    def _mark_read(self, key: str) -> None:
        self._read.add(key)
        for piece in self._held.pop(key, ()):
            self.adjoint[key].add_(piece, alpha=self.scale)

    def fold(self, key: str, lhs: torch.Tensor, rhs: torch.Tensor) -> None:
        """Add scale * lhs @ rhs into adjoint[key]; one fused addmm_, no piece in memory, once a[key] is read."""
        if key in self._read:
            self.adjoint[key].addmm_(lhs, rhs, alpha=self.scale)
        else:
            self._held.setdefault(key, []).append(lhs.mm(rhs))


class _WeightUse(Function):
    """gy @ W inside the inner backward pass; in an armed pass W's gradient (gy^T g) goes into the adjoint.

    Folding it here, rather than letting autograd hand W's gradient on, lets the product be
    accumulated straight into the adjoint (addmm_) instead of being built as a weight-sized piece
    and added afterwards.
    """

    @staticmethod
    def forward(ctx, gy, w, slot, key):
        ctx.save_for_backward(gy, w)
        ctx.slot, ctx.key = slot, key
        return gy.mm(w)

    @staticmethod
    def backward(ctx, g):
        gy, w = ctx.saved_tensors
        slot = ctx.slot
        g_gy = g.mm(w.t()) if ctx.needs_input_grad[0] else None
        if slot.adjoint is not None:   # these nodes exist only where slot.weights
            slot.fold(ctx.key, gy.t(), g)
            return g_gy, None, None, None
        return g_gy, gy.t().mm(g) if ctx.needs_input_grad[1] else None, None, None


class _Linear(Function):
    """x W^T + b on 2-D x, with a backward made of ordinary (twice-differentiable) ops."""

    @staticmethod
    def forward(ctx, x, w, b, slot, key):
        ctx.save_for_backward(x, w)
        ctx.slot, ctx.key, ctx.has_bias = slot, key, b is not None
        return torch.addmm(b, x, w.t()) if b is not None else x.mm(w.t())

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        slot = ctx.slot
        armed = slot.adjoint is not None
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _WeightUse.apply(gy, w, slot, ctx.key) if slot.weights and torch.is_grad_enabled() else gy.mm(w)
        if armed:
            if slot.weights:
                slot.fold(ctx.key, gy.t(), x)
        elif ctx.needs_input_grad[1]:
            gw = gy.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(0)
        return gx, gw, gb, None, None


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, slot: FoldSlot, key: str) -> torch.Tensor:
    """F.linear for any leading shape, built so that `slot` can fold this weight's part of H_t a."""
    if slot.weights:
        slot.keys.append(key)
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), w, b, slot, key)
    return y.view(*x.shape[:-1], y.shape[-1])
