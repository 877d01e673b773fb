"""Folding the weight part of H_t a into the adjoint during the second backward pass."""

from __future__ import annotations

import torch

import distill_core.inner as inner
from distill_core.adjoint_fold import FoldSlot, linear
from test_hypergradient import make_case, unrolled_loss


def test_a_piece_that_arrives_before_its_reader_waits_for_it():
    """The adjoint is also the pass's input: a piece folded early must not change what the reader sees."""
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    root = w * 3.0                      # stands for G_t[W]; its node reads a[W]
    a0 = torch.randn(3, 4, dtype=torch.float64)
    adjoint = {"w": a0.clone()}
    lhs, rhs, late = (torch.randn(3, 5, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64),
                      torch.randn(3, 2, dtype=torch.float64))
    slot = FoldSlot(weights=True)
    slot.keys.append("w")
    with slot.armed(adjoint, -0.5, roots={"w": root}):
        slot.fold("w", lhs, rhs)
        assert torch.equal(adjoint["w"], a0)          # held back: the reader has not run yet
        (read,) = torch.autograd.grad(root, [w], grad_outputs=[adjoint["w"]])
        slot.fold("w", late, rhs[:2])                 # after the reader: straight into the adjoint
    torch.testing.assert_close(read, 3.0 * a0)         # the reader saw the unfolded adjoint
    torch.testing.assert_close(adjoint["w"], a0 - 0.5 * (lhs @ rhs) - 0.5 * (late @ rhs[:2]))


def test_linear_matches_torch_linear_to_second_order():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    outs = []
    for f in (lambda: torch.nn.functional.linear(x, w, b), lambda: linear(x, w, b, FoldSlot(weights=True), "w")):
        y = f()
        gx, gw = torch.autograd.grad((torch.tanh(y) * v).sum(), [x, w], create_graph=True)
        outs.append((y, gx, gw, *torch.autograd.grad((gx.sin().sum() + (gw ** 2).sum()), [x, w, b])))
    for ref, got in zip(*outs):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_second_pass_returns_no_linear_weight_but_the_gradient_is_exact(monkeypatch):
    """At t > 0 the linear weights' part of H_t a goes straight into the adjoint, not out of the pass."""
    learner, d, theta0, batch = make_case(3, True)
    linear_weights = [k for k in theta0 if k.endswith(".weight") and theta0[k].dim() == 2 and "embeddings" not in k]
    assert len(linear_weights) == 6 * learner.num_layers + 2   # q, k, v, o, ffn in/out; pooler; classifier
    asked = []
    real_grad = torch.autograd.grad

    def spy(outputs, inputs, *args, **kwargs):
        if kwargs.get("grad_outputs") is not None:   # the second backward pass of a reverse step
            asked.append(len(inputs))
        return real_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    res = inner.hypergradient(learner, theta0, d, [batch], recompute=True)
    monkeypatch.undo()
    data = len(d.learnable()) - 1   # all but the lr, whose gradient takes a path of its own
    # reverse steps t = 2, 1 (parameters other than linear weights, plus data), then t = 0 (data only)
    assert asked == [len(theta0) - len(linear_weights) + data] * 2 + [data]
    ref_loss = unrolled_loss(learner, d, theta0, batch)
    names = list(d.learnable())
    ref = torch.autograd.grad(ref_loss, [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11)
