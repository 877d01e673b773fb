"""Packed real batches (block-diagonal attention) compute exactly what padded batches compute."""

from __future__ import annotations

import torch

from distill_core.data import EncodedSplit, collate, pack
from distill_core.inner import hypergradient, real_loss_and_grad
from conftest import tiny_learner
from test_hypergradient import make_case


def random_split(n: int = 9, seed: int = 0) -> EncodedSplit:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 14, (n,), generator=g).tolist()
    ids = [[2] + torch.randint(5, 40, (m - 2,), generator=g).tolist() + [3] for m in lengths]
    types = [[0] * (m // 2) + [1] * (m - m // 2) for m in lengths]
    return EncodedSplit(ids, types, torch.randint(0, 2, (n,), generator=g))


def test_packed_logits_equal_padded_logits():
    learner = tiny_learner()
    enc = random_split()
    theta = learner.fresh_params(torch.Generator().manual_seed(0))
    idx = list(range(len(enc)))
    packed = pack(enc, idx, row_tokens=20)
    assert packed.input_ids.shape[0] > 1  # several rows, several examples per row
    padded = learner.real_logits(theta, collate(enc, packed.order))
    torch.testing.assert_close(learner.real_logits(theta, packed), padded, rtol=1e-10, atol=1e-12)
    assert sorted(packed.order) == idx


def test_packed_gradients_and_hypergradient_equal_padded():
    learner, d, theta0, _ = make_case(3, True)
    enc = random_split(seed=1)
    idx = list(range(len(enc)))
    padded = collate(enc, idx)
    packed = pack(enc, idx, row_tokens=24)
    l1, g1 = real_loss_and_grad(learner, theta0, [padded])
    l2, g2 = real_loss_and_grad(learner, theta0, [packed])
    assert abs(l1 - l2) < 1e-12
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-9, atol=1e-12)
    h1 = hypergradient(learner, theta0, d, [padded])
    h2 = hypergradient(learner, theta0, d, [packed])
    for k in h1.grads:
        torch.testing.assert_close(h2.grads[k], h1.grads[k], rtol=1e-9, atol=1e-12)
