"""Shared fixtures: a tiny float64 BERT for exact checks, the bundled model, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distill_core.learner import Learner

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def tiny_learner(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64,
                 pooling: str = "cls") -> Learner:
    """A random 2-layer, 2-head BERT classifier; small enough for finite differences in float64."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=32, num_labels=num_labels,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
                     attn_implementation="eager")
    module = BertForSequenceClassification(cfg).to(dtype)
    return Learner(module, tokenizer=None, name="tiny-test-bert", pooling=pooling)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared data at {SHARED_DATA}")
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bundled():
    """The real pre-trained bundled model (all-MiniLM-L6-v2), 2 labels, on CPU."""
    from distill_core.learner import load_learner

    return load_learner(num_labels=2, device="cpu")
