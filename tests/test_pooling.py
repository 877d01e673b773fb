"""Mean pooling (beyond the paper): the engine's pass, its hypergradient and its files, against references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill_core.data import RealBatch, collate, pack
from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.errors import UserError
from distill_core.inner import hypergradient
from distill_core.learner import Learner
from distill_core.losses import attention_kl, soft_cross_entropy
from conftest import tiny_learner
from test_packing import random_split


def mean_learner(seed: int = 0) -> Learner:
    base = tiny_learner(seed=seed)
    return Learner(base.module, tokenizer=None, name="tiny-test-bert", pooling="mean")


def reference_logits(learner: Learner, params: dict, **kwargs):
    """Hugging Face's encoder, then the masked mean of its last layer and the head: an independent pass."""
    bert = {k[5:]: v for k, v in params.items() if k.startswith("bert.")}
    mask = kwargs.get("attention_mask")
    out = torch.func.functional_call(learner.module.bert, bert, args=(),
                                     kwargs={**kwargs, "output_attentions": True, "return_dict": True}, strict=False)
    h = out.last_hidden_state
    keep = torch.ones(h.shape[:2], dtype=h.dtype) if mask is None else mask.to(h.dtype)
    pooled = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    return F.linear(pooled, params["classifier.weight"], params["classifier.bias"]), out.attentions


def perturbed(learner: Learner, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype)
            for k, v in learner.fresh_params(g).items()}


def test_mean_pooled_passes_equal_the_reference():
    learner = mean_learner()
    params = perturbed(learner)
    embeds = torch.randn(3, 7, learner.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits, rows = learner.synthetic_forward(params, embeds, "cls")
    ref, attentions = reference_logits(learner, params, inputs_embeds=embeds)
    torch.testing.assert_close(logits, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rows, torch.stack(attentions, dim=1)[..., 0, :], rtol=1e-10, atol=1e-12)

    enc = random_split(n=11, seed=4)
    packed = pack(enc, list(range(len(enc))), row_tokens=24)
    assert int(torch.bincount(packed.cls_index // packed.input_ids.shape[1]).max()) > 1   # several per row
    padded = collate(enc, packed.order)
    assert not bool(padded.attention_mask.bool().all())                                   # padding to skip
    ref, _ = reference_logits(learner, params, input_ids=padded.input_ids, attention_mask=padded.attention_mask,
                              token_type_ids=padded.token_type_ids)
    torch.testing.assert_close(learner.real_logits(params, padded), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(learner.real_logits(params, packed), ref, rtol=1e-10, atol=1e-12)
    # and it is another classifier than the pooler's
    cls = tiny_learner()
    cls_logits = cls.real_logits({**params, **{k: v for k, v in cls.pretrained.items() if ".pooler." in k}}, padded)
    assert (cls_logits - ref).abs().max() > 1e-3


def test_mean_pooling_trains_no_pooler():
    assert not any(".pooler." in k for k in mean_learner().inner_names)
    assert any(".pooler." in k for k in tiny_learner().inner_names)


@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, True, True)])
def test_mean_pooled_hypergradient_matches_finite_differences(T, different, recompute):
    learner = mean_learner(seed=3)
    cfg = DistilledConfig(seq_len=6, samples_per_class=T if different else 1, inner_steps=T,
                          different_data_per_step=different, label_type="soft", attention_labels="cls",
                          inner_lr_init=0.3)
    g = torch.Generator().manual_seed(4)
    d = DistilledData(cfg, 2, learner.hidden_size, learner.num_layers, learner.num_heads, dtype=torch.float64,
                      generator=g)
    with torch.no_grad():
        d.label_values.add_(0.3 * torch.randn(d.label_values.shape, generator=g, dtype=torch.float64))
    theta0 = learner.fresh_params(torch.Generator().manual_seed(5))
    ids = torch.randint(1, 40, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[3, 4:] = 0
    batch = RealBatch(ids, torch.zeros_like(ids), mask, torch.tensor([0, 1, 1, 0, 1]))
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)

    def unrolled() -> float:
        """Plain SGD on the reference pass, every graph kept."""
        params = {k: v.detach().requires_grad_(True) for k, v in theta0.items()}
        lrs = F.softplus(d.lr_raw)
        for t in range(T):
            b = d.step_batch(t)
            logits, attentions = reference_logits(learner, params, inputs_embeds=b.embeds)
            loss = soft_cross_entropy(logits, b.targets) + attention_kl(b.attention_logits, attentions, "cls")
            keys = list(params)
            gs = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True, allow_unused=True)
            params = {k: params[k] - lrs[t] * (0 if gr is None else gr) for k, gr in zip(keys, gs)}
        logits, _ = reference_logits(learner, params, input_ids=ids, attention_mask=mask,
                                     token_type_ids=torch.zeros_like(ids))
        return float(soft_cross_entropy(logits, batch.labels).detach())

    assert res.real_loss == pytest.approx(unrolled(), rel=1e-10)
    eps, gen = 1e-6, torch.Generator().manual_seed(7)
    for name, tensor in d.learnable().items():
        direction = torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
        base = tensor.detach().clone()
        losses = []
        for sign in (1, -1):
            with torch.no_grad():
                tensor.copy_(base + sign * eps * direction)
            losses.append(unrolled())
        with torch.no_grad():
            tensor.copy_(base)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert float((res.grads[name] * direction).sum()) == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


def test_a_file_distilled_with_one_pooling_is_refused_by_the_other(tmp_path):
    mean = mean_learner()
    cfg = DistilledConfig(seq_len=4)
    d = DistilledData(cfg, 2, mean.hidden_size, mean.num_layers, mean.num_heads, meta={"pooling": "mean"},
                      dtype=torch.float64)
    path = d.save(tmp_path / "mean.safetensors")
    DistilledData.load(path, dtype=torch.float64, expect=mean.fingerprint())      # its own pooling: fine
    with pytest.raises(UserError, match="pooling 'mean'.*uses 'cls'"):
        DistilledData.load(path, dtype=torch.float64, expect=tiny_learner().fingerprint())


def test_unknown_pooling_and_models_the_engine_does_not_cover_are_refused():
    base = tiny_learner()
    with pytest.raises(UserError, match="pooling must be one of cls, mean"):
        Learner(base.module, pooling="max")
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    other = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=40, dim=12, n_layers=1, n_heads=2,
                                                                 hidden_dim=24, max_position_embeddings=16))
    with pytest.raises(UserError, match="needs a plain BERT classifier"):
        Learner(other, pooling="mean")
