"""Teacher targets for the outer loss (beyond the paper).

The paper's outer loss is the cross-entropy of the fine-tuned learner against each real example's
gold label. With `distill.teacher_weight` > 0 the target becomes a mix of that label and the class
probabilities of a teacher: the same pre-trained model fine-tuned on the whole train split in the
ordinary way (`finetune_steps`). Knowledge-distillation targets carry how sure a good classifier is
about each example, which a 32-example batch of one-hot labels does not (SST-2's train split is mostly
short phrases whose gold labels are noisy).

The teacher is trained once per (model, train split, recipe) and its probabilities on the train rows
are cached as safetensors, so seeds and resumed runs share it; what it cost is kept with it and
reported by every run that uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import EncodedSplit
from .distilled import atomic_write_bytes
from .evaluation import finetune_steps, predict_logits
from .learner import Learner
from .presets import BASE
from .runs import default_runs_dir

__all__ = ["TeacherRecipe", "TeacherTargets", "teacher_targets", "mixed_targets", "train_fingerprint",
           "TEACHER_DIR_ENV"]

TEACHER_DIR_ENV = "DISTILL_TEACHER_DIR"   # where teacher targets are cached (default: <runs dir>/.teachers)


@dataclass(frozen=True)
class TeacherRecipe:
    """How the teacher is fine-tuned (the full-data baseline's recipe: AdamW, warm-up 10 %, clipping 1.0)."""

    steps: int = BASE["distill"]["teacher_steps"]
    batch_size: int = 32
    lr: float = 5e-5
    seed: int = 0


@dataclass
class TeacherTargets:
    probs: torch.Tensor     # (N, C) float32: the teacher's class probabilities on each train row, in order
    info: dict              # the recipe, what it cost (cpu_seconds), its accuracy on the train rows, cached or not


def train_fingerprint(encoded: EncodedSplit) -> str:
    """A hash of a split's token ids and labels, in order: the cache is valid only for this exact split."""
    h = hashlib.sha256()
    lengths = encoded.lengths()
    h.update(lengths.tobytes())
    h.update(np.fromiter((t for row in encoded.input_ids for t in row), dtype=np.int64, count=int(lengths.sum()))
             .tobytes())
    h.update(encoded.labels.numpy().astype(np.int64).tobytes())
    return h.hexdigest()


def _cache_path(learner: Learner, fingerprint: str, recipe: TeacherRecipe, cache_dir: Path | None) -> tuple[Path, dict]:
    key = {"model": learner.name, "identity": learner.identity(), "pooling": learner.pooling,
           "train": fingerprint, "steps": recipe.steps, "batch_size": recipe.batch_size, "lr": recipe.lr,
           "seed": recipe.seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else Path(
        os.environ.get(TEACHER_DIR_ENV) or default_runs_dir() / ".teachers")
    return root / f"teacher-{digest}.safetensors", key


def _load(path: Path, key: dict, rows: int, classes: int) -> TeacherTargets | None:
    """The cached targets, or None when the file is missing, unreadable or made for something else."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("teacher", "{}"))
            probs = fh.get_tensor("probs")
    except (OSError, ValueError, RuntimeError, SafetensorError):   # missing or torn: train it again
        return None
    if meta.get("key") != key or tuple(probs.shape) != (rows, classes):
        return None
    return TeacherTargets(probs.float(), {**meta["info"], "cached": True, "path": str(path)})


def teacher_targets(learner: Learner, train: EncodedSplit, recipe: TeacherRecipe = TeacherRecipe(),
                    cache_dir: str | Path | None = None) -> TeacherTargets:
    """The teacher's class probabilities on every train row: from the cache, else trained and cached."""
    from safetensors.torch import save

    path, key = _cache_path(learner, train_fingerprint(train), recipe, cache_dir)
    found = _load(path, key, len(train), learner.num_labels)
    if found is not None:
        return found
    cpu0, t0 = time.process_time(), time.perf_counter()
    theta = {}
    for _, theta in finetune_steps(learner, train, recipe.steps, recipe.batch_size, recipe.lr, 0.1, recipe.seed):
        pass
    params = {k: v.detach() for k, v in theta.items()}
    probs = torch.softmax(predict_logits(learner, params, train).float(), dim=-1)
    accuracy = float((probs.argmax(-1) == train.labels).float().mean())
    info = {"steps": recipe.steps, "batch_size": recipe.batch_size, "lr": recipe.lr, "seed": recipe.seed,
            "train_accuracy": round(accuracy, 4), "cpu_seconds": round(time.process_time() - cpu0, 1),
            "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_bytes(path, save({"probs": probs.contiguous()},
                                  metadata={"teacher": json.dumps({"key": key, "info": info})}))
    return TeacherTargets(probs, {**info, "cached": False, "path": str(path)})


def mixed_targets(labels: torch.Tensor, probs: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) x one-hot(gold) + weight x teacher probabilities, one row per example."""
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).to(probs.dtype)
    return (1.0 - weight) * onehot + weight * probs
