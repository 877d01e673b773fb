"""The outer loop: learn the distilled data by back-propagating through the inner fine-tuning.

Progress is reported through callbacks (minGPT style): each event is a plain dict with a
`type` of start | eval | baseline | step | checkpoint | done | stopped | error, so a UI
thread or the CLI can listen without the distiller knowing about either.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data import DataConfig, EncodedSplit, RealBatcher, TaskData, encode_split, load_task_data
from .distilled import DistilledConfig, DistilledData
from .errors import UserError
from .presets import BASE, SCHEDULES
from .evaluation import (EvalConfig, EvaluationStopped, evaluate_distilled, majority_baseline,
                         random_kshot_baseline, require_precision)
from .inner import RECOMPUTE_COPIES, HyperResult, hypergradient
from .parallel import RanksDiverged, World, any_across, check_in_sync, current_world, sum_across
from .learner import Learner, ModelConfig, learner_from_config
from .runs import RunDir, write_json

__all__ = ["DistillConfig", "RunConfig", "Distiller", "Event", "prepare", "OPT_PREFIX"]

VALIDATION_SEED = 900_000   # head seeds of periodic validation: far from any final evaluation's (1234 + i)
STREAM_STRIDE = 1_000_003   # draw stream j seeds its batches with seed + STREAM_STRIDE * j (and + 1 its heads)
SYNC_EVERY = 10             # data-parallel runs compare the ranks' distilled data this often (outer steps)
AVG_PREFIX = "average."     # resume file: the moving average of each learnable tensor
OPT_PREFIX = "optimizer."   # resume file: optimizer state tensors are stored as optimizer.<part>.<key>

Event = dict
Callback = Callable[[Event], None]


@dataclass
class DistillConfig:
    """The outer optimisation (METHOD.md, 'Outer loop')."""

    outer_steps: int = BASE["distill"]["outer_steps"]
    optimizer: str = BASE["distill"]["optimizer"]  # adam | adamw
    lr_embeds: float = BASE["distill"]["lr_embeds"]
    lr_labels: float = BASE["distill"]["lr_labels"]
    lr_attention: float = BASE["distill"]["lr_attention"]
    lr_inner_lr: float = BASE["distill"]["lr_inner_lr"]
    meta_batch: int = BASE["distill"]["meta_batch"]  # K (real batch, theta_0) draws per outer step, hypergradients averaged
    average: float = BASE["distill"]["average"]  # 0: off; else an exponential moving average of the distilled data with this decay is what is validated, saved and returned
    weight_decay: float = BASE["distill"]["weight_decay"]
    warmup_ratio: float = BASE["distill"]["warmup_ratio"]
    schedule: str = BASE["distill"]["schedule"]  # linear: warm-up then decay to 0 (the paper) | constant: warm-up then flat
    grad_clip: float = BASE["distill"]["grad_clip"]  # 0 disables clipping
    eval_every: int = BASE["distill"]["eval_every"]  # 0: only at the start and the end
    eval_learners: int = BASE["distill"]["eval_learners"]
    eval_precision: str = BASE["distill"]["eval_precision"]  # float32 | bfloat16 (autocast of the scoring passes only)
    real_precision: str = BASE["distill"]["real_precision"]  # float32 | bfloat16: autocast of each outer step's real-batch pass (beyond the paper)
    # beyond the paper: each outer step's real examples lose this share of their words (special tokens kept),
    # freshly drawn each step, so the data leans less on the train rows' exact wording (0: the paper's batches)
    real_word_dropout: float = BASE["distill"]["real_word_dropout"]
    # beyond the paper: each draw's inner steps see the synthetic embeddings plus Gaussian noise of this std
    # (in units of their own element std at that step), and its theta_0 the pre-trained weights plus
    # noise of this share of each tensor's std; the hypergradient taken there updates the clean data, so
    # the data must teach a neighbourhood of inputs and models, not one point (0: the paper)
    synthetic_noise: float = BASE["distill"]["synthetic_noise"]
    model_noise: float = BASE["distill"]["model_noise"]
    eval_at_start: bool = BASE["distill"]["eval_at_start"]
    baselines: bool = BASE["distill"]["baselines"]  # majority + random real k-shot, drawn beside the curve
    max_minutes: float | None = BASE["distill"]["max_minutes"]  # stop (and keep everything) after this wall-clock budget
    save_every_minutes: float = BASE["distill"]["save_every_minutes"]  # also commit a resume point this often (0: only at evaluations and the end)
    inner_memory: str = BASE["distill"]["inner_memory"]  # store | recompute (memory flat in T) | auto (recompute for T > 5)
    recompute_copies: int = BASE["distill"]["recompute_copies"]  # recompute mode: parameter copies kept (0: least memory, most recomputation)
    seed: int = BASE["distill"]["seed"]
    teacher_weight: float = BASE["distill"]["teacher_weight"]  # beyond the paper: outer-loss target = (1 - w) gold + w teacher probabilities (0: gold only, the paper)
    teacher_steps: int = BASE["distill"]["teacher_steps"]  # batches of ordinary fine-tuning that make the teacher (teacher_weight > 0 only)

    def validate(self) -> None:
        if self.outer_steps < 1:
            raise UserError(f"outer_steps must be >= 1, got {self.outer_steps}")
        if self.optimizer not in ("adam", "adamw"):
            raise UserError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        for name in ("lr_embeds", "lr_labels", "lr_attention", "lr_inner_lr"):
            v = getattr(self, name)
            if not (0 <= v <= 10):
                raise UserError(f"{name} must be in [0, 10], got {v}")
        if isinstance(self.meta_batch, bool) or not isinstance(self.meta_batch, int) or not 1 <= self.meta_batch <= 1024:
            raise UserError(f"meta_batch must be an integer in [1, 1024], got {self.meta_batch!r}")
        if not (isinstance(self.average, (int, float)) and 0 <= self.average < 1):
            raise UserError(f"average must be in [0, 1) (0: off), got {self.average!r}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule must be linear or constant, got {self.schedule!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.grad_clip < 0:
            raise UserError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.eval_every < 0:
            raise UserError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.eval_learners < 1:
            raise UserError(f"eval_learners must be >= 1, got {self.eval_learners}")
        EvalConfig(precision=self.eval_precision).validate()
        require_precision("real_precision", self.real_precision)
        if not (isinstance(self.real_word_dropout, (int, float)) and 0 <= self.real_word_dropout <= 0.5):
            raise UserError(f"real_word_dropout must be in [0, 0.5] (0: whole real examples), got {self.real_word_dropout!r}")
        if self.inner_memory not in ("auto", "store", "recompute"):
            raise UserError(f"inner_memory must be auto, store or recompute, got {self.inner_memory!r}")
        if not 0 <= self.recompute_copies <= 64:
            raise UserError(f"recompute_copies must be in [0, 64], got {self.recompute_copies}")
        if not 0 <= self.save_every_minutes <= 24 * 60:
            raise UserError(f"save_every_minutes must be in [0, 1440], got {self.save_every_minutes}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise UserError(f"max_minutes must be > 0 when set, got {self.max_minutes}")
        for name in ("synthetic_noise", "model_noise"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise UserError(f"{name} must be in [0, 1] (0: no noise, the paper), got {value!r}")
        if not (isinstance(self.teacher_weight, (int, float)) and 0 <= self.teacher_weight <= 1):
            raise UserError(f"teacher_weight must be in [0, 1] (0: gold labels only), got {self.teacher_weight!r}")
        if isinstance(self.teacher_steps, bool) or not isinstance(self.teacher_steps, int) or self.teacher_steps < 1:
            raise UserError(f"teacher_steps must be an integer >= 1, got {self.teacher_steps!r}")


@dataclass
class RunConfig:
    """Everything a run needs, composed once; the Streamlit form and the CLI both build this."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distilled: DistilledConfig = field(default_factory=DistilledConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preset: str | None = None        # the preset it was resolved from (None: built by hand)

    @classmethod
    def from_preset(cls, name: str, overrides: dict | None = None) -> "RunConfig":
        """Every setting from a preset (distill_core.presets), then `overrides` {section: {key: value}}."""
        from .presets import SECTIONS, preset_values

        values = preset_values(name)
        for section, changes in (overrides or {}).items():
            if section not in SECTIONS:
                raise UserError(f"unknown settings section {section!r}")
            unknown = set(changes) - set(values[section])
            if unknown:
                raise UserError(f"unknown {section} setting(s): {', '.join(sorted(unknown))}")
            values[section].update(changes)
        return cls.from_dict({**values, "preset": name})

    def validate(self) -> None:
        self.data.validate()
        self.model.torch_dtype()
        self.distilled.validate()
        self.distill.validate()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        def build(kind, values):
            known = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in (values or {}).items() if k in known})

        data = dict(d.get("data") or {})
        if d and "dev_fraction" not in data:
            data["dev_fraction"] = 0.0    # a run made before the dev split: it trained on all of train
        return cls(build(DataConfig, data), build(ModelConfig, d.get("model")),
                   build(DistilledConfig, d.get("distilled")), build(DistillConfig, d.get("distill")),
                   preset=d.get("preset"))


@dataclass
class Prepared:
    """Loaded data and model, shared by distillation, evaluation and inspection."""

    task: TaskData
    learner: Learner
    train: EncodedSplit
    eval: EncodedSplit                   # reported numbers only (final evaluation, baselines, the study)
    dev: EncodedSplit | None = None      # selection: periodic validation, `best`, grids

    @property
    def selection(self) -> EncodedSplit:
        """The split every choice is made on: dev, or (dev_fraction 0, older runs) the evaluation split."""
        return self.dev if self.dev is not None else self.eval

    @property
    def selection_name(self) -> str:
        return "dev" if self.dev is not None else self.task.spec.eval_split

    def split(self, asked: str | None, custom: bool = False) -> tuple[str, EncodedSplit]:
        """(name, encoded rows) of the split a user names: dev, or the evaluation split (the default;
        "evaluation file" for a custom data set, which also answers to the task's split name)."""
        eval_name = "evaluation file" if custom else self.task.spec.eval_split
        name = asked or eval_name
        if name == "dev":
            if self.dev is None:
                raise UserError("this run has no dev split (made before it, or with dev_fraction 0)")
            return name, self.dev
        if name in (eval_name, self.task.spec.eval_split):
            return name, self.eval
        raise UserError(f"--split must be dev or {eval_name}, got {name!r}")


def prepare(config: RunConfig, learner: Learner | None = None, task: TaskData | None = None) -> Prepared:
    """Load the task data and the learner, and tokenise both splits once."""
    task = task or load_task_data(config.data)
    if learner is None:
        learner = learner_from_config(config.model, task.spec.num_labels, list(task.spec.label_names))
    elif learner.num_labels != task.spec.num_labels:
        raise UserError(f"the learner has {learner.num_labels} labels but task {task.spec.name} has "
                        f"{task.spec.num_labels}")
    config.distilled.validate(learner.max_positions)
    if learner.tokenizer is None:
        raise UserError("the learner has no tokenizer; real data cannot be encoded")
    train = encode_split(task.train, learner.tokenizer, config.data.max_length)
    evaluation = encode_split(task.eval, learner.tokenizer, config.data.max_length)
    dev = None if task.dev is None else encode_split(task.dev, learner.tokenizer, config.data.max_length)
    return Prepared(task, learner, train, evaluation, dev)


def _sum_over_ranks(res: HyperResult) -> HyperResult:
    """The sum of every rank's summed draws: one all-reduce of the gradients and the three losses."""
    names = sorted(res.grads)
    device = res.grads[names[0]].device
    losses = [res.real_loss, res.inner_task_loss, res.inner_attention_loss or 0.0]
    flat = torch.cat([res.grads[n].reshape(-1) for n in names]
                     + [torch.tensor(losses, dtype=res.grads[names[0]].dtype, device=device)])
    sum_across(flat)
    out, at = {}, 0
    for n in names:
        size = res.grads[n].numel()
        out[n] = flat[at: at + size].view_as(res.grads[n])
        at += size
    real, task, attn = flat[at:].tolist()
    return HyperResult(real, out, task, None if res.inner_attention_loss is None else attn)


def _filled(ids: list[list[int]], classes: list[int], labels: np.ndarray, input_ids, seq_len: int,
            rng: np.random.Generator) -> list[list[int]]:
    """Each sample's tokens followed by those of further random train examples of its class (their [CLS]
    dropped, their [SEP] kept) until seq_len positions are full: short phrases would leave most positions
    as padding."""
    out = []
    for row, c in zip(ids, classes):
        row, pool = list(row), np.flatnonzero(labels == c)
        while len(row) < seq_len:
            row += list(input_ids[int(rng.choice(pool))])[1:]
        out.append(row[:seq_len])
    return out


def _new_distilled(config: RunConfig, prep: Prepared) -> DistilledData:
    learner, task = prep.learner, prep.task
    gen = torch.Generator().manual_seed(config.distill.seed)
    meta = {"task": task.spec.name, "model": learner.name, "model_identity": learner.identity(), "demo": task.is_demo,
            "source": task.source, "pooling": learner.pooling}
    d = DistilledData(config.distilled, task.spec.num_labels, learner.hidden_size, learner.num_layers,
                      learner.num_heads, list(task.spec.label_names), meta, device=learner.device,
                      dtype=learner.dtype, generator=gen)
    if config.distilled.init in ("real", "real-fill"):
        rng = np.random.default_rng(config.distill.seed)
        labels = prep.train.labels.numpy()
        spc, C = config.distilled.samples_per_class, task.spec.num_labels
        picks = []
        for c in range(C):
            pool = np.flatnonzero(labels == c)
            if len(pool) < spc:
                raise UserError(f"init=real needs {spc} train examples of class {task.spec.label_names[c]!r}, "
                                f"found {len(pool)}")
            picks.append(rng.choice(pool, size=spc, replace=False))
        firsts = [int(picks[r % C][r // C]) for r in range(d.num_samples)]
        ids = [list(prep.train.input_ids[i]) for i in firsts]
        if config.distilled.init == "real-fill":
            ids = _filled(ids, [labels[i] for i in firsts], labels, prep.train.input_ids, config.distilled.seq_len, rng)
        pad = learner.tokenizer.pad_token_id or 0
        d.init_from_token_ids(ids, learner.word_embeddings(), pad)
        d.meta["init_examples"] = firsts
    # neither the attention maps nor the pooled output depend on the head, so any head gives the same start
    theta0 = learner.fresh_params(torch.Generator().manual_seed(config.distill.seed))
    with torch.no_grad():
        if config.distilled.attention_init == "model" and d.attention_logits is not None:
            out = learner.forward(theta0, inputs_embeds=d.model_embeds().detach(), output_attentions=True, eager=True)
            d.init_attention_from(torch.stack(out.attentions, dim=1))
        if d.feature_targets is not None:
            d.init_features_from(learner.synthetic_forward(theta0, d.model_embeds().detach(), pooled=True)[2])
    return d


class Distiller:
    """Runs the outer loop of METHOD.md and reports through callbacks."""

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, prepared: Prepared | None = None,
                 callbacks: list[Callback] | None = None, resume: bool = False, run_info: dict | None = None,
                 world: World | None = None):
        """run_info: what the user said about a new run (name, notes, who started it), kept in config.json.
        world: the data-parallel ranks (default: the process group this process joined, else one)."""
        config.validate()
        self.config = config
        self.world = world or current_world()
        self.run = RunDir(Path(run_dir)) if run_dir is not None else None
        self.callbacks: list[Callback] = list(callbacks or [])
        self.stop_event = threading.Event()
        self.prep = prepared or prepare(config)
        self.distilled = _new_distilled(config, self.prep)
        self.step = 0
        self._cpu_before = 0.0      # process CPU seconds of earlier sessions of this run (restored on resume)
        self._cpu_mark: float | None = None
        self._last_commit = time.perf_counter()
        self.best: dict | None = None
        self.last_eval_step: int | None = None
        self.teacher: dict | None = None    # the teacher's recipe and cost, when the outer loss uses one
        self._weight_stds: dict[str, float] | None = None   # model_noise's per-tensor scale (first use)
        self.outer_train = self._outer_train()
        self.streams = [self._stream(j) for j in range(config.distill.meta_batch * self.world.size)]
        self.averaged: dict[str, torch.Tensor] | None = (
            {n: t.detach().clone() for n, t in self.distilled.learnable().items()} if config.distill.average else None)
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        if self.run is not None:
            if resume:
                self._resume()
                if not self.world.is_writer:
                    self.run = None     # rank 0 alone writes the run; the others only read its resume point
            elif not self.world.is_writer:
                self.run = None
            else:
                if self.run.exists():
                    raise UserError(f"run directory {self.run.path} already holds a run; "
                                    "choose another --out or resume it")
                self.run.path.mkdir(parents=True, exist_ok=True)
                write_json(self.run.config_path, {**config.to_dict(), "task_source": self.prep.task.source,
                                                  "demo": self.prep.task.is_demo,
                                                  "draws_per_step": len(self.streams),
                                                  "world_size": self.world.size,
                                                  **({"run": dict(run_info)} if run_info else {})})

    # --- setup -----------------------------------------------------------------------------
    def _outer_train(self) -> EncodedSplit:
        """The train split the outer loss draws from: gold labels, or (teacher_weight > 0, beyond the paper)
        each row's mix of its gold label and a teacher's probabilities (distill_core/teacher.py)."""
        c, train = self.config.distill, self.prep.train
        if not c.teacher_weight:
            return train
        from .teacher import TeacherRecipe, mixed_targets, teacher_targets

        found = teacher_targets(self.prep.learner, train, TeacherRecipe(steps=c.teacher_steps, seed=self.config.data.seed))
        self.teacher = found.info
        return EncodedSplit(train.input_ids, train.token_type_ids,
                            mixed_targets(train.labels, found.probs, c.teacher_weight))

    def _stream(self, j: int) -> tuple[RealBatcher, torch.Generator]:
        """Draw stream j: its own real batches and head initialisations. Stream 0 is the run's own
        (seeds `seed` and `seed + 1`, as before streams existed), so meta-batch 1 runs are unchanged."""
        seed = self.config.distill.seed + STREAM_STRIDE * j
        tokenizer = self.prep.learner.tokenizer
        batcher = RealBatcher(self.outer_train, self.config.data.real_batch_size, seed=seed,
                              pad_id=tokenizer.pad_token_id or 0,
                              word_dropout=self.config.distill.real_word_dropout,
                              keep_ids=frozenset(tokenizer.all_special_ids),
                              packing=self.prep.learner.supports_packing)
        return batcher, torch.Generator().manual_seed(seed + 1)

    @property
    def batcher(self) -> RealBatcher:
        return self.streams[0][0]

    @property
    def head_generator(self) -> torch.Generator:
        return self.streams[0][1]

    def add_callback(self, fn: Callback) -> None:
        self.callbacks.append(fn)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config.distill
        # feature targets are labels of the pooled output: they share the labels' outer lr
        lr_of = {"embeds": c.lr_embeds, "labels": c.lr_labels, "attention": c.lr_attention, "lr": c.lr_inner_lr,
                 "features": c.lr_labels}
        groups = [{"params": [t], "lr": lr_of[name], "name": name} for name, t in self.distilled.learnable().items()]
        kind = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return kind(groups, weight_decay=c.weight_decay)

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up over warmup_ratio of the steps, then linear decay to 0 (as the reference) or flat.

        "constant" suits short CPU runs: learning often takes off only after 100-200 steps, when a
        linear decay over a short horizon has already shrunk the outer learning rate.
        """
        total = max(1, self.config.distill.outer_steps)
        warm = int(total * self.config.distill.warmup_ratio)
        if step < warm:
            return (step + 1) / warm
        if self.config.distill.schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warm))

    def _stop_clock(self) -> None:
        """Fold the loop's CPU time into the run's and stop counting: what the process does after the
        loop (a caller's scoring, say) is not this run's time. A later `run_loop` counts again."""
        self._cpu_before, self._cpu_mark = self.cpu_seconds, None

    @property
    def cpu_seconds(self) -> float:
        """Process CPU seconds (all threads) spent on this run: training and its periodic validation,
        across resumes; the work lost to a kill after the last resume point is not counted."""
        now = 0.0 if self._cpu_mark is None else time.process_time() - self._cpu_mark
        return self._cpu_before + now

    # --- events ----------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        event.setdefault("time", time.time())
        if self.run is not None and event["type"] in ("start", "step", "eval", "baseline", "done", "stopped", "error"):
            self.run.append_metrics(event)
        for fn in self.callbacks:
            fn(event)

    def stop(self) -> None:
        """Ask the loop to stop after the current step (cooperative; safe from another thread)."""
        self.stop_event.set()

    # --- evaluation & checkpoints ---------------------------------------------------------------
    @contextlib.contextmanager
    def serving(self):
        """The data users get: the moving average when `average` is on (swapped in, then back), else as is."""
        if self.averaged is None:
            yield
            return
        raw = {n: t.detach().clone() for n, t in self.distilled.learnable().items()}
        self._set_learnable(self.averaged)
        try:
            yield
        finally:
            self._set_learnable(raw)

    def served(self) -> DistilledData:
        """A copy of the data users get now: the moving average when `average` is on. Code that drives
        `train_step` itself (pilots, benches) must score this, not `distilled`, which is the raw iterate
        between the steps of a loop."""
        with self.serving():
            return self.distilled.clone()

    def _set_learnable(self, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, t in self.distilled.learnable().items():
                t.copy_(values[n])

    def _update_average(self) -> None:
        # warm-up: the first steps weigh more, so the average does not cling to the initialisation
        decay = min(self.config.distill.average, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for n, t in self.distilled.learnable().items():
                self.averaged[n].mul_(decay).add_(t.detach(), alpha=1 - decay)

    def evaluate(self, learners: int | None = None) -> dict:
        """Periodic validation on the selection split, with head seeds no final evaluation uses."""
        cfg = EvalConfig(learners=learners or self.config.distill.eval_learners,
                         precision=self.config.distill.eval_precision, seed=VALIDATION_SEED)
        return evaluate_distilled(self.prep.learner, self.distilled, self.prep.selection,
                                  self.prep.task.spec.metrics, cfg, should_stop=self.stop_event.is_set)

    def _eval_and_checkpoint(self) -> None:
        t0 = time.perf_counter()
        try:
            with self.serving():
                result = self.evaluate()
        except EvaluationStopped:  # a stop request: keep the work, skip the point
            if self.run is not None and self.step > 0:
                self._save_last()
            return
        metric = self.prep.task.spec.primary_metric
        score = result["metrics"][metric]["mean"]
        improved = self.best is None or score > self.best["score"]
        if improved:
            self.best = {"step": self.step, "score": score, "metric": metric, "metrics": result["metrics"]}
        self.last_eval_step = self.step
        self.emit({"type": "eval", "step": self.step, "metrics": result["metrics"], "split": self.prep.selection_name,
                   "seconds": time.perf_counter() - t0, "best": improved, "cpu_seconds": round(self.cpu_seconds, 2),
                   "loss": result.get("loss")})
        if self.run is not None:
            self.distilled.meta["step"] = self.step
            with self.serving():
                self.distilled.save(self.run.checkpoint(f"step-{self.step:06d}"))
                if improved:
                    self.distilled.save(self.run.checkpoint("best"))
            self._save_last()
            self.emit({"type": "checkpoint", "step": self.step, "best": improved})

    def _save_last(self) -> None:
        """Commit a resume point: distilled data, optimizer state and loop state in ONE file, one rename.

        A kill at any moment leaves either the previous resume point or this one, never a mix.
        last.safetensors (what the pages open) and state.json (a readable mirror) follow it; resuming
        reads only the resume file.
        """
        from safetensors.torch import save

        from .distilled import atomic_write_bytes

        self.distilled.meta["step"] = self.step
        tensors = dict(self.distilled.tensors())
        groups = []
        for group in self.optimizer.param_groups:
            st = self.optimizer.state.get(group["params"][0], {})
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"{OPT_PREFIX}{group['name']}.{key}"] = val.detach().to("cpu").contiguous().reshape(val.shape)
            groups.append(group["name"])
        for n, t in (self.averaged or {}).items():
            tensors[f"{AVG_PREFIX}{n}"] = t.detach().to("cpu").contiguous()
        state = {"step": self.step, "best": self.best, "last_eval_step": self.last_eval_step, "groups": groups,
                 "cpu_seconds": self.cpu_seconds,
                 "batcher": self.batcher.state(),
                 "head_generator": self.head_generator.get_state().tolist(),
                 "streams": [{"batcher": b.state(), "head_generator": g.get_state().tolist()}
                             for b, g in self.streams[1:]],
                 "scheduler": self.scheduler.state_dict(), "saved_at": time.time()}
        meta = {**self.distilled.metadata(), "resume_state": json.dumps(state)}
        atomic_write_bytes(self.run.resume_path, save(tensors, metadata=meta))   # the commit
        self._last_commit = time.perf_counter()
        with self.serving():
            self.distilled.save(self.run.checkpoint("last"))
        write_json(self.run.state_path, {k: v for k, v in state.items() if k in ("step", "best", "saved_at")})

    def _resume(self) -> None:
        from safetensors import safe_open

        self.run.require()
        path = self.run.resume_path
        if path.exists():
            loaded = DistilledData.load(path, device=self.prep.learner.device, dtype=self.prep.learner.dtype,
                                        expect=self.prep.learner.fingerprint())
            with safe_open(str(path), framework="pt", device="cpu") as f:
                state = json.loads((f.metadata() or {})["resume_state"])
                opt = {k[len(OPT_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(OPT_PREFIX)}
                avg = {k[len(AVG_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(AVG_PREFIX)}
            if self.averaged is not None:
                if set(avg) != set(self.averaged):
                    raise UserError(f"{path} holds no moving average of the distilled data; the run was made "
                                    "without --average")
                with torch.no_grad():
                    for n, t in avg.items():
                        self.averaged[n].copy_(t.to(self.averaged[n].device, self.averaged[n].dtype))
        elif self.run.state_path.exists() and self.run.checkpoint("last").exists():
            loaded, state, opt = self._legacy_resume_point()    # runs saved before the one-file commit
        else:
            # Killed before its first resume point: start again from step 0 in the same directory
            # (the initialisation is seeded, so this is the run it would have been).
            self._truncate_metrics(0)
            return
        self._set_learnable(loaded.learnable())
        with torch.no_grad():
            self.distilled.label_values.copy_(loaded.label_values)
        self.distilled.meta.update(loaded.meta)
        for group in self.optimizer.param_groups:
            p = group["params"][0]
            st = {k.split(".", 1)[1]: v.to(p.device) for k, v in opt.items() if k.split(".", 1)[0] == group["name"]}
            if st:
                self.optimizer.state[p] = st
        self.scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr  # load_state_dict restores the schedule's position, not the groups' current lr
        saved = [{"batcher": state["batcher"], "head_generator": state["head_generator"]}, *state.get("streams", [])]
        if len(saved) != len(self.streams):
            # another number of ranks: the run keeps its draws per step, each rank takes its share
            if len(saved) % self.world.size:
                raise UserError(f"{self.run.path} draws {len(saved)} (real batch, theta_0) per outer step; "
                                f"{self.world.size} ranks cannot split them evenly")
            self.config.distill.meta_batch = len(saved) // self.world.size
            self.streams = [self._stream(j) for j in range(len(saved))]
        for (batcher, gen), st in zip(self.streams, saved):
            batcher.load_state(st["batcher"])
            gen.set_state(torch.tensor(st["head_generator"], dtype=torch.uint8))
        self.step = int(state["step"])
        self.best = state.get("best")
        self.last_eval_step = state.get("last_eval_step")   # a finished final evaluation is not repeated
        self._cpu_before = float(state.get("cpu_seconds") or 0.0)
        self._truncate_metrics(self.step)

    def _legacy_resume_point(self):
        from safetensors.torch import load_file

        state = self.run.state()
        loaded = DistilledData.load(self.run.checkpoint("last"), device=self.prep.learner.device,
                                    dtype=self.prep.learner.dtype, expect=self.prep.learner.fingerprint())
        if int(loaded.meta.get("step", -1)) != int(state["step"]):
            raise UserError(f"{self.run.path}: state.json (step {state['step']}) and last.safetensors "
                            f"(step {loaded.meta.get('step')}) disagree; the run was interrupted mid-save")
        return loaded, state, load_file(str(self.run.checkpoints / "last-optimizer.safetensors"))

    def _truncate_metrics(self, step: int) -> None:
        """Cut what was logged after the resume point, so no step or evaluation appears twice."""
        records = self.run.metrics()
        keep = [] if step == 0 else [r for r in records if int(r.get("step", 0) or 0) <= step
                                     and r.get("type") not in ("done", "stopped", "error")]
        if len(keep) != len(records):
            self.run.rewrite_metrics(keep)

    # --- the loop ------------------------------------------------------------------------------
    def _baselines(self) -> None:
        p, spec = self.prep, self.prep.task.spec
        maj = majority_baseline(p.task.train.labels, p.selection, spec.metrics, spec.num_labels)
        self.emit({"type": "baseline", "name": "majority", "metrics": maj["metrics"], "split": p.selection_name})
        c = self.config.distilled
        k = c.samples_per_class
        try:
            kshot = random_kshot_baseline(p.learner, p.train, p.selection, spec.metrics, k, c.inner_steps,
                                          c.inner_lr_init, c.different_data_per_step,
                                          EvalConfig(learners=self.config.distill.eval_learners,
                                                     precision=self.config.distill.eval_precision,
                                                     seed=VALIDATION_SEED),
                                          should_stop=self.stop_event.is_set)
        except EvaluationStopped:
            return
        self.emit({"type": "baseline", "name": f"random-{k}-shot", "metrics": kshot["metrics"], "lr": c.inner_lr_init,
                   "split": p.selection_name})
        if self.run is not None:
            self.run.update_results(baselines={"majority": maj["metrics"], f"random-{k}-shot": kshot["metrics"],
                                               "split": p.selection_name})

    def train_step(self) -> dict:
        """One outer step; returns the step record (not yet emitted)."""
        t0 = time.perf_counter()
        res = self.meta_hypergradient()
        bad = [n for n, g in res.grads.items() if not torch.isfinite(g).all()]
        if not math.isfinite(res.real_loss) or bad:
            raise FloatingPointError(f"non-finite {'loss' if not bad else 'gradient of ' + ', '.join(bad)} at outer "
                                     f"step {self.step + 1}; try smaller learning rates")
        learnable = self.distilled.learnable()
        for name, t in learnable.items():
            t.grad = res.grads[name]
        params = list(learnable.values())
        clip = self.config.distill.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not all(torch.isfinite(t).all() for t in params):
            raise FloatingPointError(f"distilled data became non-finite at outer step {self.step + 1}")
        if self.averaged is not None:
            self._update_average()
        self.step += 1
        return {"type": "step", "step": self.step, "real_loss": res.real_loss,
                "inner_task_loss": res.inner_task_loss, "inner_attention_loss": res.inner_attention_loss,
                "grad_norm": float(norm), "inner_lrs": self.distilled.inner_lrs().detach().cpu().tolist(),
                **({"inner_lr_groups": self.distilled.lr_groups} if self.distilled.lr_raw.dim() > 1 else {}),
                "labels": self.distilled.label_targets().detach().cpu().tolist(),
                "outer_lr_factor": self._lr_factor(self.scheduler.last_epoch),
                "seconds": time.perf_counter() - t0, "epoch": self.batcher.epoch}

    def meta_hypergradient(self) -> HyperResult:
        """The exact hypergradient averaged over the step's draws (real batch, theta_0), one per stream.

        This rank computes streams rank*K .. rank*K+K-1 (K = meta_batch) and the ranks sum theirs with
        one all-reduce, so N ranks x meta-batch K equal one process with meta-batch K x N. The losses
        reported are the draws' means.
        """
        learner, c = self.prep.learner, self.config.distill
        mine = range(self.world.rank * c.meta_batch, (self.world.rank + 1) * c.meta_batch)
        total: HyperResult | None = None
        clean = self.distilled.embeds.detach().clone() if c.synthetic_noise else None
        try:
            for j, (batcher, gen) in enumerate(self.streams):
                if j not in mine:   # another rank's draw: advance the stream so every rank holds every stream's state
                    batcher.next_indices()
                    learner.fresh_params(gen)
                    continue
                real = [b.to(learner.device) for b in batcher.next()]
                theta0 = learner.fresh_params(gen)
                if c.synthetic_noise or c.model_noise:
                    theta0 = self._perturb(j, theta0, clean)
                res = hypergradient(learner, theta0, self.distilled, real,
                                    recompute=None if c.inner_memory == "auto" else c.inner_memory == "recompute",
                                    copies=c.recompute_copies, real_precision=c.real_precision)
                total = res if total is None else total.plus(res)
        finally:
            if clean is not None:
                with torch.no_grad():
                    self.distilled.embeds.copy_(clean)
        if self.world.distributed:
            total = _sum_over_ranks(total)
        return total.scaled(1.0 / len(self.streams)) if len(self.streams) > 1 else total

    def _perturb(self, j: int, theta0: dict[str, torch.Tensor], clean: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Draw j's noise (synthetic_noise, model_noise; beyond the paper): the embeddings are set to
        clean + noise in place (meta_hypergradient restores them), theta_0 comes back perturbed.

        The noise is a function of (seed, draw stream, step) alone, so a resumed run draws what an
        unbroken one would, with no generator state to keep."""
        c, learner = self.config.distill, self.prep.learner
        state = np.random.SeedSequence([c.seed, j, self.step]).generate_state(2)
        gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        if c.synthetic_noise:
            # the unit is the data's own scale: the synthetic embeddings outgrow the word-embedding table's
            # (element std 0.056 in MiniLM) by ~50x over a long run, and the LayerNorm after the embedding
            # sum makes only relative changes matter
            scale = c.synthetic_noise * float(clean.float().std())
            noise = torch.randn(clean.shape, generator=gen, dtype=clean.dtype)
            with torch.no_grad():
                self.distilled.embeds.copy_(clean + noise.to(clean.device) * scale)
        if c.model_noise:
            if self._weight_stds is None:
                self._weight_stds = {k: float(v.float().std()) if v.numel() > 1 else 0.0
                                     for k, v in learner.pretrained.items()}
            head = set(learner.head_names)
            perturbed = {}
            for k, v in theta0.items():
                if k in head or not self._weight_stds.get(k):
                    perturbed[k] = v
                    continue
                noise = torch.randn(v.shape, generator=gen, dtype=v.dtype)
                perturbed[k] = v + noise.to(v.device) * (c.model_noise * self._weight_stds[k])
            theta0 = perturbed
        return theta0

    def run_loop(self) -> dict:
        """Run until outer_steps, the time budget or a stop request; returns the final summary."""
        c = self.config.distill
        started = time.perf_counter()
        if self._cpu_mark is None:
            self._cpu_mark = time.process_time()
        torch.manual_seed(c.seed)
        self.emit({"type": "start", "step": self.step, "outer_steps": c.outer_steps,
                   "task": self.prep.task.spec.name, "demo": self.prep.task.is_demo,
                   "source": self.prep.task.source, "train_rows": len(self.prep.train),
                   "eval_rows": len(self.prep.selection), "eval_split": self.prep.selection_name,
                   "device": str(self.prep.learner.device),
                   "eval_learners": c.eval_learners, "label_names": list(self.prep.task.spec.label_names),
                   "primary_metric": self.prep.task.spec.primary_metric,
                   **({"teacher": self.teacher} if self.teacher else {})})
        status = "done"
        writer = self.world.is_writer
        try:
            if self.step == 0 and c.eval_at_start and writer:
                self._eval_and_checkpoint()
            if c.baselines and writer and not (self.run is not None and self.run.results().get("baselines")):
                self._baselines()
            while self.step < c.outer_steps:
                over_budget = c.max_minutes is not None and time.perf_counter() - started > c.max_minutes * 60
                if any_across(self.stop_event.is_set() or over_budget, self.prep.learner.device):
                    status = "stopped"     # every rank stops at the same step
                    break
                record = self.train_step()
                if self.world.distributed and (self.step % SYNC_EVERY == 0 or self.step == c.outer_steps):
                    check_in_sync(self.distilled.learnable(), self.step)
                record["elapsed"] = time.perf_counter() - started
                record["cpu_seconds"] = round(self.cpu_seconds, 2)
                self.emit(record)
                if c.eval_every and self.step % c.eval_every == 0 and self.step < c.outer_steps and writer:
                    self._eval_and_checkpoint()
                elif (self.run is not None and c.save_every_minutes
                      and time.perf_counter() - self._last_commit >= c.save_every_minutes * 60):
                    self._save_last()
            if status == "done" and self.step > 0 and self.last_eval_step != self.step and writer:
                self._eval_and_checkpoint()
            elif self.run is not None and self.step > 0 and self.last_eval_step != self.step:
                self._save_last()  # stopped: keep the work, skip the slow evaluation
        except (FloatingPointError, RanksDiverged) as exc:
            self._stop_clock()
            self.emit({"type": "error", "step": self.step, "message": str(exc)})
            return {"status": "error", "message": str(exc), "step": self.step, "best": self.best}
        self._stop_clock()
        if self.averaged is not None:   # what callers score after the loop is what the run saved: the average
            self._set_learnable(self.averaged)
        summary = {"status": status, "step": self.step, "best": self.best,
                   "elapsed": time.perf_counter() - started, "cpu_seconds": round(self.cpu_seconds, 1)}
        if self.run is not None:
            self.run.update_results(distillation=summary)
        self.emit({"type": status, **{k: v for k, v in summary.items() if k != "status"}})
        return summary
