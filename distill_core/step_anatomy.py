"""Anatomy of the inner step: how far fine-tuning on the distilled data moves each part of the learner,
and which of those moves carry its score.

A learner fine-tuned on distilled data differs from the pre-trained model in every parameter group at
once. To ask which moves matter, each variant here keeps some groups' moves and puts the others back
where they started (the pre-trained weights; the head's fresh random draw), then scores the result on
real data. "head only" is a linear probe of the frozen encoder's features trained on the synthetic
samples; "encoder only" keeps the random head the learner started from. With attention labels, two more
learners take the step on one part of the inner loss alone (the label loss; the attention-label loss),
from the same head: what each part teaches by itself. A diagnostic that goes beyond
the paper: nothing in distillation or evaluation depends on it.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from .data import EncodedSplit
from .distilled import DistilledData
from .errors import UserError
from .evaluation import compute_metrics, eval_batches, predict_logits, summarize
from .inner import fine_tune
from .learner import Learner, Params
from .runs import RunDir

__all__ = ["StepAnatomy", "parameter_group", "parameter_groups", "relative_moves", "move_variants",
           "step_anatomy", "record_anatomy", "recorded_anatomy", "EVERY_MOVE", "HEAD_ONLY", "ENCODER_ONLY", "ALL_BUT",
           "LABEL_LOSS_ONLY", "ATTENTION_LOSS_ONLY"]

EVERY_MOVE = "every move"      # the learner as evaluation scores it
HEAD_ONLY = "head only"        # the encoder stays pre-trained
ENCODER_ONLY = "encoder only"  # the head stays at its random draw
ALL_BUT = "all but "           # prefix: one group's move undone
LABEL_LOSS_ONLY = "label loss only"          # the step taken on the label (task) loss alone
ATTENTION_LOSS_ONLY = "attention loss only"  # the step taken on the attention-label loss alone
LOSS_VARIANTS = ((LABEL_LOSS_ONLY, ("task", "features")), (ATTENTION_LOSS_ONLY, ("attention",)))

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def parameter_group(name: str, learner: Learner) -> str:
    """The part of the learner a parameter belongs to: embeddings, layer i, pooler, head, or other."""
    if name in learner.head_names:
        return "head"
    if ".pooler." in name or name.startswith("pooler."):
        return "pooler"
    m = _LAYER.search(name)
    if m:
        return f"layer {int(m.group(1))}"
    if "embeddings" in name:
        return "embeddings"
    return "other"


def parameter_groups(learner: Learner, names) -> list[str]:
    """The groups present among `names`, in the model's order (input to output, the head last)."""
    present = {parameter_group(n, learner) for n in names}

    def order(g: str) -> tuple[int, int]:
        if g == "embeddings":
            return (0, 0)
        if g.startswith("layer "):
            return (1, int(g.split()[1]))
        return (2, ["pooler", "other", "head"].index(g))
    return sorted(present, key=order)


@torch.no_grad()
def relative_moves(learner: Learner, theta0: Params, theta: Params) -> dict[str, float]:
    """||theta - theta0|| / ||theta0|| per group (the head's against its fresh random draw)."""
    moved: dict[str, float] = {}
    start: dict[str, float] = {}
    for k, v in theta.items():
        g = parameter_group(k, learner)
        moved[g] = moved.get(g, 0.0) + float((v.float() - theta0[k].float()).pow(2).sum())
        start[g] = start.get(g, 0.0) + float(theta0[k].float().pow(2).sum())
    return {g: (moved[g] / start[g]) ** 0.5 if start[g] > 0 else float("nan")
            for g in parameter_groups(learner, theta)}


def move_variants(groups: list[str]) -> list[tuple[str, frozenset[str]]]:
    """(name, the groups whose moves it keeps): every move, head only, encoder only, then all but each
    encoder group in model order."""
    encoder = [g for g in groups if g != "head"]
    variants = [(EVERY_MOVE, frozenset(groups)), (HEAD_ONLY, frozenset({"head"})),
                (ENCODER_ONLY, frozenset(encoder))]
    variants += [(ALL_BUT + g, frozenset(groups) - {g}) for g in encoder]
    return variants


@dataclass
class StepAnatomy:
    """What `step_anatomy` measured: per-group moves and each variant's score, over the same learners."""

    groups: list[str]
    relative_move: dict[str, dict[str, float]]        # group -> {mean, std} over learners
    variants: dict[str, dict[str, dict[str, float]]]   # variant -> metric -> {mean, std, n}
    metric: str                                        # the headline metric (the task's paper metric)
    learners: int
    seed: int
    split: str
    eval_rows: int
    seconds: float
    checkpoint: str | None = None
    step: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StepAnatomy":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def drop(self, variant: str) -> float:
        """Points of the headline metric that a variant loses against every move (positive: it loses)."""
        return self.variants[EVERY_MOVE][self.metric]["mean"] - self.variants[variant][self.metric]["mean"]


def step_anatomy(learner: Learner, distilled: DistilledData, encoded: EncodedSplit, metrics: tuple[str, ...],
                 learners: int = 4, seed: int = 1234, split: str = "evaluation", metric: str | None = None,
                 checkpoint: str | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> StepAnatomy:
    """Fine-tune `learners` fresh learners on the distilled data (head seeds seed, seed+1, ..., as
    evaluation uses) and score every move variant of each on `encoded`; with attention labels, also the
    learner stepped on the label loss alone and on the attention loss alone. `metric` is the headline one
    (the task's paper_metric; default: the first of `metrics`); `checkpoint` names the data's file in its
    run, which record_anatomy needs."""
    metric = metric or metrics[0]
    if metric not in metrics:
        raise UserError(f"metric {metric!r} is not one of the task's metrics ({', '.join(metrics)})")
    if learners < 1:
        raise UserError(f"learners must be >= 1, got {learners}")
    if len(encoded) == 0:
        raise UserError(f"the {split} split has no rows to score")
    labels = encoded.labels.numpy()
    batches = eval_batches(learner, encoded)
    attention_terms = distilled.attention_logits is not None and distilled.config.attention_labels != "none"
    t0 = time.perf_counter()
    groups: list[str] = []
    rows: dict[str, list[dict[str, float]]] = {}
    moves: dict[str, list[float]] = {}
    for i in range(learners):
        if should_stop is not None and should_stop():
            raise UserError(f"stopped after {i} of {learners} learners; nothing was recorded")
        theta0 = learner.fresh_params(torch.Generator().manual_seed(seed + i))
        theta = {k: v.detach() for k, v in fine_tune(learner, theta0, distilled).items()}
        groups = parameter_groups(learner, theta)
        for g, r in relative_moves(learner, theta0, theta).items():
            moves.setdefault(g, []).append(r)
        scored = [(name, {k: (v if parameter_group(k, learner) in kept else theta0[k]) for k, v in theta.items()})
                  for name, kept in move_variants(groups)]
        if attention_terms:   # what each part of the inner loss teaches on its own, from the same head
            scored += [(name, {k: v.detach() for k, v in fine_tune(learner, theta0, distilled, terms).items()})
                       for name, terms in LOSS_VARIANTS]
        for name, params in scored:
            preds = predict_logits(learner, params, encoded, batches=batches).argmax(-1).numpy()
            rows.setdefault(name, []).append(compute_metrics(preds, labels, metrics))
        if progress is not None:
            progress(i + 1, learners)
    return StepAnatomy(groups=groups,
                       relative_move={g: {"mean": float(np.mean(v)), "std": float(np.std(v))}
                                      for g, v in moves.items()},
                       variants={name: summarize(r) for name, r in rows.items()}, metric=metric,
                       learners=learners, seed=seed, split=split, eval_rows=len(encoded),
                       seconds=time.perf_counter() - t0, checkpoint=checkpoint, step=distilled.meta.get("step"))


def _key(a: StepAnatomy) -> str:
    return f"{a.checkpoint}|{a.split}|{a.learners}|seed {a.seed}"


def record_anatomy(run: RunDir, anatomy: StepAnatomy) -> None:
    """Keep a measurement in the run's results.json under `anatomy`, keyed by checkpoint, split,
    learners and seed (a newer one with the same key replaces the older)."""
    if not anatomy.checkpoint:
        raise UserError("an anatomy is recorded for a named checkpoint; pass step_anatomy its checkpoint")
    results = run.results()
    kept = dict(results.get("anatomy") or {})
    kept[_key(anatomy)] = anatomy.to_dict()
    run.update_results(anatomy=kept)


def recorded_anatomy(run: RunDir, checkpoint: str, step: int | None) -> list[StepAnatomy]:
    """The run's recorded measurements of this checkpoint at this step (a checkpoint such as `last`
    moves on while a run continues), most learners first."""
    found = [StepAnatomy.from_dict(d) for d in (run.results().get("anatomy") or {}).values()
             if isinstance(d, dict) and d.get("checkpoint") == checkpoint and d.get("step") == step]
    return sorted(found, key=lambda a: -a.learners)
