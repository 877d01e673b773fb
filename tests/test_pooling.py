"""Mean pooling (beyond the paper): the engine's pass, its hypergradient and its files, against references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill_core.data import collate, pack
from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.errors import UserError
from distill_core.inner import hypergradient
from distill_core.learner import Learner
from conftest import tiny_learner
from test_encoder import perturbed_params
from test_hypergradient import assert_matches_finite_differences, make_case, unrolled_loss
from test_packing import random_split


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


def test_mean_pooled_passes_equal_the_reference():
    learner = tiny_learner(pooling="mean")
    params = perturbed_params(learner)
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
    assert not any(".pooler." in k for k in tiny_learner(pooling="mean").inner_names)
    assert any(".pooler." in k for k in tiny_learner().inner_names)


@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, True, True)])
def test_mean_pooled_hypergradient_matches_finite_differences(T, different, recompute):
    learner, d, theta0, batch = make_case(T, different, seed=3, pooling="mean")
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)

    def unrolled() -> float:
        """Plain SGD on the reference pass, every graph kept."""
        return float(unrolled_loss(learner, d, theta0, batch, forward=reference_logits).detach())

    assert res.real_loss == pytest.approx(unrolled(), rel=1e-10)
    assert_matches_finite_differences(res, d, unrolled)


def test_a_file_distilled_with_one_pooling_is_refused_by_the_other(tmp_path):
    mean = tiny_learner(pooling="mean")
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
