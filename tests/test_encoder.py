"""The engine's BERT forward pass (last layer only at [CLS]) against Hugging Face's module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill_core.data import collate, pack
from distill_core.encoder import spec_for
from distill_core.learner import Learner
from conftest import tiny_learner
from test_packing import random_split


def perturbed_params(learner: Learner, seed: int = 0) -> dict:
    """Pre-trained weights moved off their init so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    params = learner.fresh_params(g)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def hf(learner: Learner, params: dict, **kwargs):
    return learner.forward(params, eager=True, **kwargs)


@pytest.mark.parametrize("attention", ["none", "cls", "all"])
def test_synthetic_pass_equals_hugging_face(attention):
    learner = tiny_learner()
    params = perturbed_params(learner)
    embeds = torch.randn(3, 7, learner.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits, rows = learner.synthetic_forward(params, embeds, attention)
    ref = hf(learner, params, inputs_embeds=embeds, output_attentions=True)
    torch.testing.assert_close(logits, ref.logits, rtol=1e-10, atol=1e-12)
    stacked = torch.stack(ref.attentions, dim=1)
    if attention == "none":
        assert rows is None
    else:
        torch.testing.assert_close(rows, stacked[..., 0, :] if attention == "cls" else stacked, rtol=1e-10, atol=1e-12)


def test_synthetic_pass_second_derivatives_equal_hugging_face():
    """Hessian-vector products through the pass (what the hypergradient differentiates) agree."""
    learner = tiny_learner()
    params = {k: v.detach().requires_grad_(True) for k, v in perturbed_params(learner).items()}
    embeds = torch.randn(2, 5, learner.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    label = torch.randn(2, learner.num_layers, learner.num_heads, 5, dtype=torch.float64)

    def hvp(loss_fn):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        direction = sum((g * torch.ones_like(g)).sum() for g in grads)
        return torch.autograd.grad(direction, list(params.values()))

    def ours():
        logits, rows = learner.synthetic_forward(params, embeds, "cls")
        return F.cross_entropy(logits, torch.tensor([0, 1])) + (F.log_softmax(label, -1).exp() * rows).sum()

    def theirs():
        out = hf(learner, params, inputs_embeds=embeds, output_attentions=True)
        rows = torch.stack(out.attentions, dim=1)[..., 0, :]
        return F.cross_entropy(out.logits, torch.tensor([0, 1])) + (F.log_softmax(label, -1).exp() * rows).sum()

    for a, b in zip(hvp(ours), hvp(theirs)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_padded_and_packed_real_batches_equal_hugging_face():
    learner = tiny_learner()
    params = perturbed_params(learner, seed=3)
    enc = random_split(n=11, seed=4)
    packed = pack(enc, list(range(len(enc))), row_tokens=24)
    assert int(torch.bincount(packed.cls_index // packed.input_ids.shape[1]).max()) > 1  # several [CLS] per row
    padded = collate(enc, packed.order)
    ref = hf(learner, params, input_ids=padded.input_ids, attention_mask=padded.attention_mask,
             token_type_ids=padded.token_type_ids).logits
    torch.testing.assert_close(learner.real_logits(params, padded), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(learner.real_logits(params, packed), ref, rtol=1e-10, atol=1e-12)


def test_bundled_model_runs_on_the_engine_encoder(bundled):
    assert bundled.encoder_spec is not None and bundled.encoder_spec.num_layers == 6
    tok = bundled.tokenizer
    texts = ["a gripping , funny film", "dull and far too long", "the cast is fine", "i loved it"]
    enc_ids = [tok(t)["input_ids"] for t in texts]
    from distill_core.data import EncodedSplit

    enc = EncodedSplit(enc_ids, [[0] * len(i) for i in enc_ids], torch.tensor([1, 0, 1, 1]))
    params = bundled.fresh_params(torch.Generator().manual_seed(0))
    packed = pack(enc, [0, 1, 2, 3], row_tokens=32)
    padded = collate(enc, packed.order)
    ref = hf(bundled, params, input_ids=padded.input_ids, attention_mask=padded.attention_mask,
             token_type_ids=padded.token_type_ids).logits
    torch.testing.assert_close(bundled.real_logits(params, packed), ref, rtol=1e-4, atol=1e-5)


def test_other_architectures_fall_back_to_hugging_face():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                     max_position_embeddings=32, hidden_act="relu", attn_implementation="eager")
    learner = Learner(BertForSequenceClassification(cfg).double(), name="relu-bert")
    assert spec_for(learner.module) is None and learner.encoder_spec is None
    params = learner.fresh_params(torch.Generator().manual_seed(0))
    embeds = torch.randn(2, 4, 12, dtype=torch.float64)
    logits, rows = learner.synthetic_forward(params, embeds, "cls")
    ref = hf(learner, params, inputs_embeds=embeds, output_attentions=True)
    torch.testing.assert_close(logits, ref.logits)
    assert rows.shape == (2, 2, 2, 4)


def test_same_length_evaluation_batches_score_every_example_exactly():
    from distill_core.data import iterate_eval_batches
    from distill_core.evaluation import eval_batches, predict_logits

    learner = tiny_learner()
    params = perturbed_params(learner, seed=5)
    enc = random_split(n=23, seed=6)
    batches = iterate_eval_batches(enc, 30, same_length=True)
    assert sorted(i for idx, _ in batches for i in idx) == list(range(len(enc)))
    for idx, b in batches:  # one length per batch: no padding, no mask
        assert len({len(enc.input_ids[i]) for i in idx}) == 1 and bool(b.attention_mask.all())
        assert b.input_ids.shape[0] * b.input_ids.shape[1] <= 30 or len(idx) == 1
    assert len(eval_batches(learner, enc, 30)) == len(batches)
    padded = collate(enc, list(range(len(enc))))
    ref = hf(learner, params, input_ids=padded.input_ids, attention_mask=padded.attention_mask,
             token_type_ids=padded.token_type_ids).logits
    torch.testing.assert_close(predict_logits(learner, params, enc, max_tokens=30), ref, rtol=1e-10, atol=1e-12)
