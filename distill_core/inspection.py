"""Looking inside distilled data: nearest vocabulary tokens, attention labels vs the model's attention."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .distilled import DistilledData
from .inner import fine_tune
from .learner import Learner, Params
from .losses import kl_to_attention

__all__ = ["nearest_tokens", "decoded_lines", "label_attention", "model_cls_attention", "SampleAttention",
           "inspect_sample", "fine_tuned_pair", "position_mass", "OrderWeight", "order_weight", "inspect_summary"]


@torch.no_grad()
def nearest_tokens(distilled: DistilledData, learner: Learner, top_k: int = 5,
                   samples: list[int] | None = None) -> list[list[list[tuple[str, float]]]]:
    """Per sample, per position: the top-k vocabulary tokens by cosine similarity of embeddings."""
    vocab = F.normalize(learner.word_embeddings().float(), dim=-1)                  # (V, D)
    tok = learner.tokenizer
    rows = samples if samples is not None else list(range(distilled.num_samples))
    out = []
    for r in rows:
        e = F.normalize(distilled.embeds[r].detach().float().to(vocab.device), dim=-1)  # (L, D)
        sims, ids = (e @ vocab.T).topk(top_k, dim=-1)
        words = [tok.convert_ids_to_tokens(i) for i in ids.cpu().tolist()] if tok is not None \
            else [[str(x) for x in i] for i in ids.cpu().tolist()]
        out.append([list(zip(w, s)) for w, s in zip(words, sims.cpu().tolist())])
    return out


def decoded_lines(nearest: list[list[list[tuple[str, float]]]]) -> list[str]:
    """One readable line per sample: the nearest token of every position."""
    return [" ".join(pos[0][0] for pos in sample) for sample in nearest]


def label_attention(distilled: DistilledData) -> np.ndarray | None:
    """Target [CLS] attention of every sample: (N, K, H, L) (row 0 of the full matrix for 'all')."""
    dist = distilled.attention_distributions()
    if dist is None:
        return None
    if distilled.config.attention_labels == "all":
        dist = dist[..., 0, :]
    return dist.float().cpu().numpy()


@torch.no_grad()
def model_cls_attention(learner: Learner, params: Params, embeds: torch.Tensor) -> np.ndarray:
    """The model's attention of the [CLS] query on one synthetic sample: (K, H, L)."""
    out = learner.forward(params, inputs_embeds=embeds.detach()[None], output_attentions=True, eager=True)
    return torch.stack([a[0, :, 0, :] for a in out.attentions]).float().cpu().numpy()


@dataclass
class SampleAttention:
    sample: int
    label: np.ndarray | None     # (K, H, L) learned attention label ([CLS] row)
    before: np.ndarray           # (K, H, L) model attention with theta_0 (pre-trained + fresh head)
    after: np.ndarray            # (K, H, L) after the inner-loop fine-tuning on the distilled data
    kl_before: np.ndarray | None  # (K, H) KL(label || actual)
    kl_after: np.ndarray | None
    tokens: list[str]            # nearest vocabulary token per position


def _kl(label: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """KL(label || actual) per layer and head from (K, H, L) distributions."""
    log_label = torch.as_tensor(label, dtype=torch.float64).clamp_min(1e-30).log()
    return kl_to_attention(log_label, torch.as_tensor(actual, dtype=torch.float64)).numpy()


def inspect_sample(learner: Learner, distilled: DistilledData, sample: int, head_seed: int = 0,
                   thetas: tuple[Params, Params] | None = None) -> SampleAttention:
    """Label vs actual [CLS] attention of one sample, before and after the inner-loop fine-tuning.

    `thetas` = (theta_0, theta_T) lets callers fine-tune once for many samples.
    """
    theta0, theta_t = thetas if thetas is not None else fine_tuned_pair(learner, distilled, head_seed)
    embeds = distilled.model_embeds()[sample].detach()
    before = model_cls_attention(learner, theta0, embeds)
    after = model_cls_attention(learner, theta_t, embeds)
    labels = label_attention(distilled)
    label = None if labels is None else labels[sample]
    tokens = [pos[0][0] for pos in nearest_tokens(distilled, learner, 1, [sample])[0]]
    return SampleAttention(sample, label, before, after,
                           None if label is None else _kl(label, before),
                           None if label is None else _kl(label, after), tokens)


def fine_tuned_pair(learner: Learner, distilled: DistilledData, head_seed: int = 0) -> tuple[Params, Params]:
    """(theta_0, theta_T): a fresh learner and the same learner after the inner loop."""
    theta0 = learner.fresh_params(torch.Generator().manual_seed(head_seed))
    return theta0, fine_tune(learner, theta0, distilled)


def position_mass(distilled: DistilledData) -> np.ndarray | None:
    """Attention-label mass per position, averaged over layers and heads: (N, L)."""
    lab = label_attention(distilled)
    return None if lab is None else lab.mean(axis=(1, 2))


@dataclass
class OrderWeight:
    """How much word order the model can see in each sample. BERT adds a position embedding to each token
    vector and LayerNorms the sum, so what decides is their lengths' ratio, not either length alone."""

    token_norm: np.ndarray          # (N,) mean length of the sample's token vectors, as fed to the model
    position_share: np.ndarray      # (N,) mean |position| / |token + position + type| over its positions
    real_token_norm: float          # the same two for the vocabulary's word embeddings at those positions
    real_position_share: float


@torch.no_grad()
def order_weight(distilled: DistilledData, learner: Learner) -> OrderWeight | None:
    """Per sample, the position embeddings' share of the embedding sum (None: a model without learned
    absolute positions). Unconstrained synthetic token vectors outgrow word embeddings ~50x over a long run;
    the position share then falls from a real sentence's ~35 % to ~1 %, and the model reads the sample as
    a bag of vectors (with position 0 kept, shuffling the rest leaves its validation score unchanged)."""
    pos_name = next((k for k in learner.pretrained if k.endswith("position_embeddings.weight")), None)
    if pos_name is None:
        return None
    type_name = next((k for k in learner.pretrained if k.endswith("token_type_embeddings.weight")), None)
    L = distilled.config.seq_len
    pos = learner.pretrained[pos_name][:L].float().cpu()                                   # (L, D)
    typ = learner.pretrained[type_name][0].float().cpu() if type_name else torch.zeros_like(pos[0])

    def share(tokens: torch.Tensor) -> torch.Tensor:       # tokens (..., L, D) -> (...,) mean over positions
        return (pos.norm(dim=-1) / (tokens + pos + typ).norm(dim=-1)).mean(dim=-1)

    fed = distilled.model_embeds().detach().float().cpu()                                  # (N, L, D)
    vocab = learner.word_embeddings().float().cpu()
    sample = vocab[torch.randperm(len(vocab), generator=torch.Generator().manual_seed(0))[:512]]
    real = sample[:, None, :].expand(-1, L, -1)            # each of 512 words at every position
    return OrderWeight(token_norm=fed.norm(dim=-1).mean(dim=-1).numpy(), position_share=share(fed).numpy(),
                       real_token_norm=float(sample.norm(dim=-1).mean()),
                       real_position_share=float(share(real).mean()))


def inspect_summary(learner: Learner, distilled: DistilledData, top_k: int = 5) -> dict:
    """Everything `python -m distill_core inspect` prints, as plain data."""
    near = nearest_tokens(distilled, learner, top_k)
    mass = position_mass(distilled)
    samples = []
    classes = distilled.row_classes().tolist()
    targets = distilled.label_targets().detach().float().cpu().numpy()
    thetas = fine_tuned_pair(learner, distilled) if distilled.attention_logits is not None else None
    order = order_weight(distilled, learner)
    for r in range(distilled.num_samples):
        entry = {"sample": r, "class": distilled.label_names[classes[r]],
                 "label_target": [round(float(x), 4) for x in targets[r]],
                 **({"token_norm": round(float(order.token_norm[r]), 3),
                     "position_share": round(float(order.position_share[r]), 4)} if order is not None else {}),
                 "decoded": " ".join(p[0][0] for p in near[r]),
                 "nearest": [[(t, round(s, 4)) for t, s in pos] for pos in near[r]]}
        if mass is not None:
            top = np.argsort(-mass[r])[:5]
            entry["top_attended_positions"] = [{"position": int(i), "mass": round(float(mass[r][i]), 4),
                                                "token": near[r][i][0][0]} for i in top]
        att = inspect_sample(learner, distilled, r, thetas=thetas) if thetas is not None else None
        if att is not None:
            entry["kl_before_mean"] = float(att.kl_before.mean())
            entry["kl_after_mean"] = float(att.kl_after.mean())
        samples.append(entry)
    return {"inner_lrs": distilled.inner_lrs().detach().cpu().tolist(), "inner_lr_groups": distilled.lr_groups,
            **({"real_token_norm": round(order.real_token_norm, 3),
                "real_position_share": round(order.real_position_share, 4)} if order is not None else {}),
            "samples": samples}
