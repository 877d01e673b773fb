"""A fresh learner is exactly the pre-trained weights plus a newly initialised head."""

from __future__ import annotations

import torch

from conftest import tiny_learner


def _check_fresh(learner):
    g = torch.Generator().manual_seed(0)
    theta = learner.fresh_params(g)
    assert set(theta) == set(learner.inner_names)
    assert learner.word_embedding_name not in theta  # zero inner-loop gradient: read from the module
    for k in learner.inner_names:
        if k in learner.head_names:
            continue
        assert torch.equal(theta[k], learner.pretrained[k]), k
    w = theta["classifier.weight"]
    assert torch.equal(theta["classifier.bias"], torch.zeros_like(theta["classifier.bias"]))
    other = learner.fresh_params(torch.Generator().manual_seed(1))["classifier.weight"]
    assert not torch.equal(w, other)
    return w


def test_fresh_learner_tiny():
    learner = tiny_learner()
    _check_fresh(learner)


def test_snapshot_is_by_value_not_a_reference():
    learner = tiny_learner()
    name = "bert.encoder.layer.0.attention.self.query.weight"
    before = learner.pretrained[name].clone()
    with torch.no_grad():  # someone trains the live module in place...
        dict(learner.module.named_parameters())[name].add_(1.0)
    assert torch.equal(learner.pretrained[name], before)  # ...the snapshot does not move
    theta = learner.fresh_params()
    assert torch.equal(theta[name], before)


def test_inner_updates_never_touch_pretrained_weights():
    from distill_core.distilled import DistilledConfig, DistilledData
    from distill_core.inner import fine_tune

    learner = tiny_learner()
    snapshot = {k: v.clone() for k, v in learner.pretrained.items()}
    d = DistilledData(DistilledConfig(seq_len=5, inner_steps=2, inner_lr_init=0.5), 2, learner.hidden_size,
                      learner.num_layers, learner.num_heads, dtype=torch.float64)
    theta = fine_tune(learner, learner.fresh_params(), d)
    assert any(not torch.equal(theta[k], snapshot[k]) for k in theta)
    for k, v in snapshot.items():
        assert torch.equal(learner.pretrained[k], v)


def test_bundled_model_is_real_and_dropout_free(bundled):
    assert bundled.num_layers == 6 and bundled.num_heads == 12 and bundled.hidden_size == 384
    assert bundled.config.hidden_dropout_prob == 0.0 and bundled.config.attention_probs_dropout_prob == 0.0
    w = _check_fresh(bundled)
    # normal(0, initializer_range) head
    assert abs(float(w.std()) - bundled.config.initializer_range) < 0.005
    # pre-trained, not random: the embeddings of related words are closer than unrelated ones
    tok = bundled.tokenizer
    emb = torch.nn.functional.normalize(bundled.word_embeddings(), dim=-1)
    good, great, table = (emb[tok.convert_tokens_to_ids(w)] for w in ("good", "great", "table"))
    assert float(good @ great) > float(good @ table) + 0.1
    # eager attention with attentions returned, SDPA agrees on the logits
    ids = torch.tensor([tok("a fine film")["input_ids"]])
    theta = bundled.fresh_params(torch.Generator().manual_seed(0))
    eager = bundled.forward(theta, input_ids=ids, output_attentions=True)
    fused = bundled.forward(theta, input_ids=ids, eager=False)
    assert len(eager.attentions) == 6 and eager.attentions[0].shape == (1, 12, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(eager.logits, fused.logits, rtol=1e-4, atol=1e-5)
