"""The loss module against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from distill_core.losses import attention_kl, attention_kl_per_head, soft_cross_entropy


def test_soft_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5]], dtype=torch.float64)
    targets = torch.tensor([[0.7, 0.3], [0.0, 1.0]], dtype=torch.float64)
    expected = 0.0
    for z, y in zip(logits.tolist(), targets.tolist()):
        lse = math.log(sum(math.exp(v) for v in z))
        expected += -sum(yc * (zc - lse) for zc, yc in zip(z, y))
    assert float(soft_cross_entropy(logits, targets)) == pytest.approx(expected / 2, rel=1e-12)
    # class ids give the ordinary cross-entropy
    hard = soft_cross_entropy(logits, torch.tensor([0, 1]))
    assert float(hard) == pytest.approx(float(soft_cross_entropy(logits, torch.eye(2, dtype=torch.float64))), rel=1e-12)


def _hand_kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def test_cls_attention_kl_matches_hand_computation():
    torch.manual_seed(0)
    B, K, H, L = 2, 3, 2, 4
    logits = torch.randn(B, K, H, L, dtype=torch.float64)
    attentions = [torch.softmax(torch.randn(B, H, L, L, dtype=torch.float64), -1) for _ in range(K)]
    total = 0.0
    per = attention_kl_per_head(logits, attentions, "cls")
    for b in range(B):
        for k in range(K):
            for h in range(H):
                z = logits[b, k, h].tolist()
                norm = sum(math.exp(v) for v in z)
                p = [math.exp(v) / norm for v in z]
                q = attentions[k][b, h, 0].tolist()  # the [CLS] query row only
                kl = _hand_kl(p, q)
                assert float(per[b, k, h]) == pytest.approx(kl, rel=1e-12)
                total += kl
    # (1/K) sum_k (1/H) sum_h KL, averaged over samples
    assert float(attention_kl(logits, attentions, "cls")) == pytest.approx(total / (B * K * H), rel=1e-12)


def test_full_attention_kl_averages_query_rows():
    torch.manual_seed(1)
    B, K, H, L = 1, 2, 2, 3
    logits = torch.randn(B, K, H, L, L, dtype=torch.float64)
    attentions = [torch.softmax(torch.randn(B, H, L, L, dtype=torch.float64), -1) for _ in range(K)]
    total = 0.0
    for k in range(K):
        for h in range(H):
            rows = []
            for i in range(L):
                p = torch.softmax(logits[0, k, h, i], -1).tolist()
                rows.append(_hand_kl(p, attentions[k][0, h, i].tolist()))
            total += sum(rows) / L
    assert float(attention_kl(logits, attentions, "all")) == pytest.approx(total / (K * H), rel=1e-12)


def test_kl_is_zero_when_label_equals_attention():
    attn = torch.softmax(torch.randn(1, 2, 5, 5, dtype=torch.float64), -1)
    logits = attn[:, :, 0, :].log()[:, None]  # (1, 1, 2, 5)
    assert float(attention_kl(logits, [attn], "cls")) == pytest.approx(0.0, abs=1e-14)


def test_attention_kl_from_log_probabilities_is_exact_where_the_model_has_almost_no_mass():
    from distill_core.losses import attention_kl_rows

    label = torch.tensor([[[[0.0, 0.0]]]], dtype=torch.float64)          # target (0.5, 0.5)
    scores = torch.tensor([[[[0.0, -60.0]]]], dtype=torch.float64, requires_grad=True)
    log_actual = torch.log_softmax(scores, dim=-1)                        # model: second position ~ e^-60
    kl = attention_kl_rows(label, log_actual, "cls", log_actual=True).sum()
    p = 0.5
    want = p * (math.log(p) - log_actual[0, 0, 0, 0].item()) + p * (math.log(p) - log_actual[0, 0, 0, 1].item())
    assert kl.item() == pytest.approx(want, rel=1e-12) and kl.item() > 29      # a clamp at 1e-12 would cap it near 13
    kl.backward()
    assert scores.grad[0, 0, 0, 1].item() == pytest.approx(-0.5, abs=1e-12)  # the gradient still pulls mass there
    clamped = attention_kl_rows(label, log_actual.detach().exp(), "cls").sum()
    assert clamped.item() < kl.item() - 10
