"""Task registry: text fields, label names, splits and metrics of each benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UserError

__all__ = ["TaskSpec", "TASKS", "get_task", "register_task"]


@dataclass(frozen=True)
class TaskSpec:
    """What the engine needs to know about a classification task."""

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    train_split: str = "train"
    eval_split: str = "validation"
    metrics: tuple[str, ...] = ("accuracy",)
    # ("glue", "sst2") -> datasets.load_dataset("glue", "sst2"); empty = not on the hub
    hub_path: tuple[str, ...] = ()
    label_field: str = "label"
    description: str = ""
    is_demo: bool = False
    extra: dict = field(default_factory=dict, compare=False)
    # the metric the paper (and GLUE) reports: "glue" is the mean of accuracy and F1 (MRPC, QQP)
    paper_metric: str = "accuracy"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (also the way to plug in a new benchmark)."""
    TASKS[spec.name] = spec
    return spec


for _spec in (
    TaskSpec("sst2", ("sentence",), ("negative", "positive"), hub_path=("glue", "sst2"),
             description="GLUE SST-2 sentiment"),
    TaskSpec("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
             metrics=("accuracy", "f1", "glue"), hub_path=("glue", "mrpc"), description="GLUE MRPC paraphrase",
             paper_metric="glue"),
    TaskSpec("qnli", ("question", "sentence"), ("entailment", "not_entailment"),
             hub_path=("glue", "qnli"), description="GLUE QNLI question/sentence entailment"),
    TaskSpec("ag_news", ("text",), ("World", "Sports", "Business", "Sci/Tech"), eval_split="test",
             hub_path=("ag_news",), description="AG News topic"),
    TaskSpec("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
             hub_path=("glue", "rte"), description="GLUE RTE entailment"),
    TaskSpec("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             eval_split="validation_matched", hub_path=("glue", "mnli"), description="GLUE MNLI (matched)"),
    TaskSpec("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
             metrics=("accuracy", "f1", "glue"), hub_path=("glue", "qqp"), description="GLUE QQP", paper_metric="glue"),
    TaskSpec("demo", ("sentence",), ("negative", "positive"),
             description="built-in demo sentiment set (assets/demo, written for this project)", is_demo=True),
):
    register_task(_spec)


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, with a message listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))} "
            "(or use --train-file/--eval-file with --text-column/--label-column for your own data)"
        ) from None
