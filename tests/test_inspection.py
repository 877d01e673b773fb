"""Inspection with the bundled model: nearest tokens, label vs actual attention, KL per layer/head."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.inspection import decoded_lines, inspect_sample, label_attention, nearest_tokens, position_mass


@pytest.fixture(scope="module")
def sample_data(bundled):
    d = DistilledData(DistilledConfig(seq_len=6, attention_labels="cls"), 2, bundled.hidden_size, bundled.num_layers,
                      bundled.num_heads, label_names=["negative", "positive"],
                      generator=torch.Generator().manual_seed(0))
    tok = bundled.tokenizer
    words = [["[CLS]", "a", "wonderful", "warm", "film", "[SEP]"], ["[CLS]", "a", "dreadful", "boring", "mess", "[SEP]"]]
    d.init_from_token_ids([tok.convert_tokens_to_ids(w) for w in words], bundled.word_embeddings(), tok.pad_token_id)
    return d, words


def test_nearest_token_of_a_word_embedding_is_that_word(bundled, sample_data):
    d, words = sample_data
    near = nearest_tokens(d, bundled, top_k=3)
    assert len(near) == 2 and len(near[0]) == 6 and len(near[0][0]) == 3
    for sample, expected in zip(near, words):
        for pos, word in zip(sample, expected):
            assert pos[0][0] == word and pos[0][1] == pytest.approx(1.0, abs=1e-5)
            assert pos[0][1] >= pos[1][1] >= pos[2][1]
    assert decoded_lines(near)[1] == "[CLS] a dreadful boring mess [SEP]"


def test_label_vs_actual_attention(bundled, sample_data):
    d, _ = sample_data
    labels = label_attention(d)
    assert labels.shape == (2, 6, 12, 6)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-5)
    att = inspect_sample(bundled, d, sample=1, head_seed=0)
    assert att.before.shape == att.after.shape == (6, 12, 6) and att.kl_before.shape == (6, 12)
    np.testing.assert_allclose(att.before.sum(-1), 1.0, rtol=1e-5)
    assert (att.kl_before >= 0).all() and (att.kl_after >= 0).all()
    assert not np.allclose(att.before, att.after)  # the inner step changed the model's attention
    # hand check of one KL entry
    p, q = att.label[2, 5], att.before[2, 5]
    assert att.kl_before[2, 5] == pytest.approx(float((p * (np.log(p) - np.log(q))).sum()), rel=1e-4)
    assert att.tokens == ["[CLS]", "a", "dreadful", "boring", "mess", "[SEP]"]
    mass = position_mass(d)
    assert mass.shape == (2, 6)
    np.testing.assert_allclose(mass.sum(-1), 1.0, rtol=1e-5)


def test_attention_init_from_model_gives_zero_kl(bundled, sample_data):
    d, _ = sample_data
    d2 = d.clone()
    theta = bundled.fresh_params(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = bundled.forward(theta, inputs_embeds=d2.embeds.detach(), output_attentions=True)
    d2.init_attention_from(torch.stack(out.attentions, dim=1))
    att = inspect_sample(bundled, d2, sample=0, head_seed=5)
    assert float(att.kl_before.max()) < 1e-4


def test_order_weight_sees_grown_token_vectors_drown_the_positions_and_the_cap_restore_them(bundled, sample_data):
    from distill_core.inspection import order_weight

    d, _ = sample_data
    real = order_weight(d, bundled)
    # a sample made of real words weighs positions as real sentences do
    assert 0.2 < real.real_position_share < 0.6
    assert np.all(np.abs(real.position_share - real.real_position_share) < 0.15)
    grown = d.clone()
    with torch.no_grad():
        grown.embeds.mul_(50.0)       # what a long run's token vectors do (~1 -> ~50)
    assert np.all(order_weight(grown, bundled).position_share < real.real_position_share / 10)
    grown.config = dataclasses.replace(d.config, embed_max_norm=1.5)   # clone shares the config object
    capped = order_weight(grown, bundled)
    assert np.all(capped.token_norm <= 1.5 + 1e-4)
    assert np.all(capped.position_share > real.real_position_share / 2)
