"""Evaluation: fine-tune N fresh learners on distilled data, mean +- std of each metric; baselines."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import EncodedSplit, iterate_eval_batches, real_batches
from .distilled import DistilledData
from .errors import UserError
from .inner import fine_tune, real_loss_and_grad
from .learner import Learner, Params

__all__ = ["aggregate_seeds", "finetune_steps", "tuned_kshot_baseline", "KSHOT_LR_GRID", "EvaluationStopped", "EvalConfig", "compute_metrics", "summarize", "predict", "evaluate_distilled", "validation_loss", "predict_logits",
           "require_precision", "PRECISIONS", "majority_baseline",
           "random_kshot_baseline", "full_finetune_baseline", "converged_finetune_baseline", "Progress"]

Progress = Callable[[int, int], None]  # (done, total)


class EvaluationStopped(RuntimeError):
    """Raised when a stop was requested before all learners were scored (a partial mean would mislead)."""


@dataclass
class EvalConfig:
    """How distilled data (or a baseline) is scored."""

    learners: int = 20
    seed: int = 1234          # learner i uses head seed `seed + i`: the same heads for every run
    max_tokens: int = 8192    # padded positions per evaluation forward pass
    # bfloat16: the scoring forward passes (not the fine-tuning) run under bf16 autocast, about 1.8x
    # faster on CPUs with bf16 units; bench/evaluation.py reports how many predictions change.
    precision: str = "float32"

    def validate(self) -> None:
        if self.learners < 1:
            raise UserError(f"learners must be >= 1, got {self.learners}")
        if self.max_tokens < 512:
            raise UserError(f"max_tokens must be >= 512, got {self.max_tokens}")
        require_precision("evaluation precision", self.precision)


PRECISIONS = ("float32", "bfloat16")


def require_precision(setting: str, value: str) -> None:
    """Refuse a precision setting (scoring's, the real-batch pass's) that is not one of PRECISIONS."""
    if value not in PRECISIONS:
        raise UserError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {value!r}")
# Packed rows of 256 tokens: attention over a longer row is mostly masked-out work (measured 1.2x
# faster than 512-token rows on SST-2 validation, same predictions).
EVAL_ROW_TOKENS = 256


def eval_batches(learner: Learner, encoded: EncodedSplit, max_tokens: int = 8192):
    """Evaluation batches: same-length batches (no padding, no mask) on the engine's encoder, else packed."""
    if learner.encoder_spec is not None:
        return iterate_eval_batches(encoded, max_tokens, same_length=True)
    return iterate_eval_batches(encoded, max_tokens, packing=learner.supports_packing, row_tokens=EVAL_ROW_TOKENS)


def compute_metrics(preds: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """accuracy, binary F1 of class 1, and "glue", their mean (GLUE's MRPC/QQP score, the paper's column), in %."""
    out = {}
    accuracy = float((preds == labels).mean() * 100)
    tp = float(((preds == 1) & (labels == 1)).sum())
    fp = float(((preds == 1) & (labels != 1)).sum())
    fn = float(((preds != 1) & (labels == 1)).sum())
    f1 = 0.0 if tp == 0 else 100 * 2 * tp / (2 * tp + fp + fn)
    for name in names:
        if name == "accuracy":
            out[name] = accuracy
        elif name == "f1":
            out[name] = f1
        elif name == "glue":
            out[name] = (accuracy + f1) / 2
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out


def summarize(per_learner: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n}} over learners (std with ddof=0, as numpy)."""
    names = per_learner[0].keys()
    return {m: {"mean": float(np.mean([r[m] for r in per_learner])),
                "std": float(np.std([r[m] for r in per_learner])),
                "n": len(per_learner)} for m in names}


def aggregate_seeds(per_seed: list[list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Across distillation seeds: {metric: {mean, std, pooled_std, seeds, learners}}.

    mean and std (ddof=1, a sample of seeds) are over the per-seed learner means; pooled_std is the
    learner spread within a seed, sqrt of the mean of the per-seed variances (ddof=0, as summarize).
    """
    if not per_seed or any(not rows for rows in per_seed):
        raise UserError("aggregate_seeds needs at least one learner for every seed")
    out = {}
    for m in per_seed[0][0]:
        means = [float(np.mean([r[m] for r in rows])) for rows in per_seed]
        variances = [float(np.var([r[m] for r in rows])) for rows in per_seed]
        out[m] = {"mean": float(np.mean(means)), "std": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
                  "pooled_std": float(np.sqrt(np.mean(variances))), "seeds": len(means),
                  "learners": [len(rows) for rows in per_seed]}
    return out


def predict(learner: Learner, params: Params, encoded: EncodedSplit, max_tokens: int = 8192,
            batches=None, precision: str = "float32") -> np.ndarray:
    """Argmax predictions on a whole split (SDPA, length-sorted batches)."""
    return predict_logits(learner, params, encoded, max_tokens, batches, precision).argmax(-1).numpy()


@torch.no_grad()
def predict_logits(learner: Learner, params: Params, encoded: EncodedSplit, max_tokens: int = 8192,
                   batches=None, precision: str = "float32") -> torch.Tensor:
    """Logits (N, C) on a whole split, in the split's order (float32 for a bf16 learner)."""
    out = torch.empty((len(encoded), learner.num_labels),
                      dtype=torch.float32 if learner.dtype == torch.bfloat16 else learner.dtype)
    dev = learner.device
    with learner.autocast(precision):   # scoring forward passes only; the fine-tuning stays in its dtype
        for idx, batch in (batches if batches is not None else eval_batches(learner, encoded, max_tokens)):
            out[torch.as_tensor(idx)] = learner.real_logits(params, batch.to(dev)).to(out.dtype).cpu()
    return out


def validation_loss(learner: Learner, distilled: DistilledData, encoded_eval: EncodedSplit,
                    config: EvalConfig | None = None) -> dict[str, float]:
    """Mean cross-entropy on the evaluation split of learners fine-tuned on the distilled data.

    The paper picks its learning rates on validation loss; this is that criterion.
    """
    config = config or EvalConfig()
    config.validate()
    batches = eval_batches(learner, encoded_eval, config.max_tokens)
    losses = []
    for i in range(config.learners):
        theta = fine_tune(learner, learner.fresh_params(torch.Generator().manual_seed(config.seed + i)), distilled)
        logits = predict_logits(learner, theta, encoded_eval, batches=batches, precision=config.precision)
        losses.append(float(F.cross_entropy(logits, encoded_eval.labels)))
    return {"mean": float(np.mean(losses)), "std": float(np.std(losses)), "n": len(losses)}


def evaluate_distilled(learner: Learner, distilled: DistilledData, encoded_eval: EncodedSplit,
                       metrics: tuple[str, ...], config: EvalConfig | None = None,
                       progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                       world=None) -> dict:
    """Fine-tune `learners` fresh learners on the distilled data (T steps, learned lrs) and score each.

    Learner i starts from head seed `seed + i`. With a data-parallel `world` (distill_core.parallel),
    rank r fine-tunes learners r, r + N, ... and every rank gets all the learners' scores, in learner
    order: the same statistics as one process.
    """
    config = config or EvalConfig()
    config.validate()
    labels = encoded_eval.labels.numpy()
    batches = eval_batches(learner, encoded_eval, config.max_tokens)
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    mine = range(rank, config.learners, size)
    rows, losses = [], []
    t0 = time.perf_counter()
    for done, i in enumerate(mine):
        if should_stop is not None and should_stop():
            raise EvaluationStopped(f"stopped after {done} of {len(mine)} learners")
        theta0 = learner.fresh_params(torch.Generator().manual_seed(config.seed + i))
        theta = fine_tune(learner, theta0, distilled)
        logits = predict_logits(learner, theta, encoded_eval, batches=batches, precision=config.precision)
        rows.append(compute_metrics(logits.argmax(-1).numpy(), labels, metrics))
        losses.append(float(torch.nn.functional.cross_entropy(logits.float(), encoded_eval.labels)))
        if progress is not None:
            progress(done + 1, len(mine))
    if size > 1:
        from .parallel import gather_json

        parts = gather_json([rows, losses])
        rows = [parts[i % size][0][i // size] for i in range(config.learners)]
        losses = [parts[i % size][1][i // size] for i in range(config.learners)]
    return {"metrics": summarize(rows), "per_learner": rows, "seconds": time.perf_counter() - t0,
            "precision": config.precision,
            "loss": {"mean": float(np.mean(losses)), "std": float(np.std(losses)), "n": len(losses)}}


def majority_baseline(train_labels: np.ndarray, encoded_eval: EncodedSplit, metrics: tuple[str, ...],
                      num_labels: int) -> dict:
    """Predict the most frequent train label for every evaluation example."""
    majority = int(np.bincount(train_labels, minlength=num_labels).argmax())
    labels = encoded_eval.labels.numpy()
    row = compute_metrics(np.full_like(labels, majority), labels, metrics)
    return {"metrics": summarize([row]), "majority_label": majority}


def _sgd_on_real(learner: Learner, theta: Params, encoded: EncodedSplit, indices: list[int], lr: float) -> Params:
    batches = [b.to(learner.device) for b in real_batches(encoded, indices, learner.supports_packing)]
    with torch.enable_grad():
        _, g = real_loss_and_grad(learner, theta, batches)
    return {k: theta[k] - lr * g[k] for k in theta}


def random_kshot_baseline(learner: Learner, encoded_train: EncodedSplit, encoded_eval: EncodedSplit,
                          metrics: tuple[str, ...], k: int, inner_steps: int, lr: float,
                          different_data_per_step: bool = False, config: EvalConfig | None = None,
                          progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """k random real examples per class, fine-tuned with the distilled protocol (T plain SGD steps at lr).

    Learner i draws its own examples (seed + i), so the spread covers the choice of examples too.
    """
    config = config or EvalConfig()
    if different_data_per_step and k % inner_steps:
        raise UserError(f"k ({k}) must be a multiple of inner steps ({inner_steps}) with different data per step")
    labels = encoded_eval.labels.numpy()
    batches = eval_batches(learner, encoded_eval, config.max_tokens)
    rows = []
    for i in range(config.learners):
        if should_stop is not None and should_stop():
            raise EvaluationStopped(f"stopped after {i} of {config.learners} learners")
        theta = _kshot_learner(learner, encoded_train, k, inner_steps, lr, different_data_per_step, config.seed + i)
        preds = predict(learner, theta, encoded_eval, batches=batches, precision=config.precision)
        rows.append(compute_metrics(preds, labels, metrics))
        if progress is not None:
            progress(i + 1, config.learners)
    return {"metrics": summarize(rows), "per_learner": rows, "k": k, "inner_steps": inner_steps, "lr": lr,
            "precision": config.precision}


def _kshot_learner(learner: Learner, encoded_train: EncodedSplit, k: int, inner_steps: int, lr: float,
                   different_data_per_step: bool, seed: int) -> Params:
    """One learner of the k-shot baseline: its own k examples per class and head (both from `seed`)."""
    labels_train = encoded_train.labels.numpy()
    rng = np.random.default_rng(seed)
    per_class = [rng.choice(np.flatnonzero(labels_train == c), size=k, replace=False) for c in np.unique(labels_train)]
    theta = learner.fresh_params(torch.Generator().manual_seed(seed))
    for t in range(inner_steps):
        if different_data_per_step:
            share = k // inner_steps
            idx = [int(j) for pc in per_class for j in pc[t * share:(t + 1) * share]]
        else:
            idx = [int(j) for pc in per_class for j in pc]
        theta = _sgd_on_real(learner, theta, encoded_train, idx, lr)
    return theta


KSHOT_LR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
TUNING_SEED = 800_000   # examples and heads of the lr choice: none of them is a reported learner's (seed + i)


def tuned_kshot_baseline(learner: Learner, encoded_train: EncodedSplit, encoded_dev: EncodedSplit,
                         encoded_eval: EncodedSplit, metrics: tuple[str, ...], k: int, inner_steps: int,
                         different_data_per_step: bool = False, grid: tuple[float, ...] = KSHOT_LR_GRID,
                         tune_learners: int = 4, config: EvalConfig | None = None,
                         progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Random real k-shot with its own inner lr, chosen per (k, T) as the argmin of dev loss over `grid`,
    then scored on the evaluation split like any baseline (the fair comparison for distilled data)."""
    if not grid or any(lr <= 0 for lr in grid):
        raise UserError(f"the k-shot lr grid needs positive values, got {list(grid)}")
    if tune_learners < 1:
        raise UserError(f"tune_learners must be >= 1, got {tune_learners}")
    dev_batches = eval_batches(learner, encoded_dev, (config or EvalConfig()).max_tokens)
    dev_loss = {}
    for lr in grid:
        losses = []
        for i in range(tune_learners):
            if should_stop is not None and should_stop():
                raise EvaluationStopped("stopped while choosing the k-shot learning rate")
            theta = _kshot_learner(learner, encoded_train, k, inner_steps, lr, different_data_per_step, TUNING_SEED + i)
            logits = predict_logits(learner, theta, encoded_dev, batches=dev_batches)
            losses.append(float(F.cross_entropy(logits, encoded_dev.labels)))
        dev_loss[lr] = float(np.mean(losses)) if all(np.isfinite(losses)) else float("inf")
    chosen = min(grid, key=lambda lr: dev_loss[lr])
    result = random_kshot_baseline(learner, encoded_train, encoded_eval, metrics, k, inner_steps, chosen,
                                   different_data_per_step, config, progress, should_stop)
    return {**result, "lr": chosen, "tuned_on": "dev", "grid": list(grid), "dev_loss": dev_loss,
            "tune_learners": tune_learners}


def finetune_steps(learner: Learner, encoded_train: EncodedSplit, steps: int, batch_size: int, lr: float,
                   warmup_ratio: float, seed: int):
    """Ordinary fine-tuning (AdamW, linear warm-up and decay over `steps`, clipping at 1.0), all weights.

    Yields (step, params) after each update; params are the live tensors (copy them to keep them).
    """
    gen = torch.Generator().manual_seed(seed)
    start = learner.fresh_params(torch.Generator().manual_seed(seed))
    start[learner.word_embedding_name] = learner.word_embeddings()  # ordinary fine-tuning trains it too
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    opt = torch.optim.AdamW(list(theta.values()), lr=lr, weight_decay=0.01)
    warm = max(1, int(steps * warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(encoded_train), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        micro = [b.to(learner.device) for b in real_batches(encoded_train, idx, learner.supports_packing)]
        opt.zero_grad(set_to_none=True)
        for b in micro:
            (F.cross_entropy(learner.real_logits(theta, b), b.labels, reduction="sum") / len(idx)).backward()
        torch.nn.utils.clip_grad_norm_(list(theta.values()), 1.0)
        opt.step()
        sched.step()
        yield step + 1, theta


def full_finetune_baseline(learner: Learner, encoded_train: EncodedSplit, encoded_eval: EncodedSplit,
                           metrics: tuple[str, ...], steps: int = 500, batch_size: int = 32, lr: float = 5e-5,
                           warmup_ratio: float = 0.1, seed: int = 0, progress: Progress | None = None) -> dict:
    """Ordinary fine-tuning for a fixed number of batches; one learner (see converged_finetune_baseline)."""
    t0 = time.perf_counter()
    theta = {}
    for step, theta in finetune_steps(learner, encoded_train, steps, batch_size, lr, warmup_ratio, seed):
        if progress is not None:
            progress(step, steps)
    params = {k: v.detach() for k, v in theta.items()}
    labels = encoded_eval.labels.numpy()
    row = compute_metrics(predict(learner, params, encoded_eval), labels, metrics)
    return {"metrics": summarize([row]), "steps": steps, "batch_size": batch_size, "lr": lr,
            "seconds": time.perf_counter() - t0}


def converged_finetune_baseline(learner: Learner, encoded_train: EncodedSplit, encoded_dev: EncodedSplit,
                                encoded_eval: EncodedSplit, metrics: tuple[str, ...], epochs: float = 3.0,
                                batch_size: int = 32, lr: float = 5e-5, learners: int = 3, check_every: int = 200,
                                patience: int = 3, warmup_ratio: float = 0.1, seed: int = 0,
                                progress: Progress | None = None, finished: list[dict] | None = None,
                                on_learner: Callable[[int, dict], None] | None = None) -> dict:
    """Full-data fine-tuning to convergence: up to `epochs`, dev-checked every `check_every` batches, stopped
    after `patience` checks without a better dev score; the best-on-dev weights are scored on the
    evaluation split. Several learners (seeds seed..seed+n-1); reports epochs, steps and time.

    `finished`: learners 0..k-1 done earlier ({"scores", "run"} each, as given to `on_learner`), which are
    kept, not trained again: an interrupted baseline resumes learner by learner."""
    if epochs <= 0 or learners < 1 or check_every < 1 or patience < 1:
        raise UserError("epochs must be > 0 and learners, check_every and patience >= 1")
    steps = max(1, math.ceil(epochs * len(encoded_train) / batch_size))
    primary = metrics[0]
    dev_labels, eval_labels = encoded_dev.labels.numpy(), encoded_eval.labels.numpy()
    dev_batches = eval_batches(learner, encoded_dev, EvalConfig().max_tokens)
    earlier = list(finished or [])[:learners]
    rows, runs = [p["scores"] for p in earlier], [p["run"] for p in earlier]
    for i in range(len(earlier), learners):
        t0, cpu0, best, best_step, bad, ran = time.perf_counter(), time.process_time(), None, 0, 0, 0
        curve = []      # dev score against training time (the time-to-accuracy figure's full-data line)
        for step, theta in finetune_steps(learner, encoded_train, steps, batch_size, lr, warmup_ratio, seed + i):
            ran = step
            if step % check_every and step != steps:
                continue
            params = {k: v.detach() for k, v in theta.items()}
            score = compute_metrics(predict(learner, params, encoded_dev, batches=dev_batches), dev_labels,
                                    metrics)[primary]
            curve.append({"step": step, "seconds": round(time.perf_counter() - t0, 1),
                          "cpu_seconds": round(time.process_time() - cpu0, 1), "dev": score})
            if best is None or score > best[0]:
                best, best_step, bad = (score, {k: v.clone() for k, v in params.items()}), step, 0
            else:
                bad += 1
                if bad >= patience:
                    break
        rows.append(compute_metrics(predict(learner, best[1], encoded_eval), eval_labels, metrics))
        runs.append({"best_step": best_step, "steps": ran, "epochs": ran * batch_size / len(encoded_train),
                     "dev": best[0], "seconds": time.perf_counter() - t0, "stopped_early": ran < steps,
                     "cpu_seconds": round(time.process_time() - cpu0, 1), "curve": curve})
        if on_learner is not None:
            on_learner(i, {"scores": rows[-1], "run": runs[-1]})
        if progress is not None:
            progress(i + 1, learners)
    return {"metrics": summarize(rows), "per_learner": rows, "learners": runs, "selected_on": "dev",
            "max_epochs": epochs, "epochs": float(np.mean([r["epochs"] for r in runs])),
            "seconds": float(sum(r["seconds"] for r in runs)), "batch_size": batch_size, "lr": lr}


