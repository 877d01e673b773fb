"""Loading real data (data dir, hub, custom files, built-in demo), tokenising it, real batches."""

from __future__ import annotations

import contextlib
import gc
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import UserError
from .presets import BASE
from .tasks import TaskSpec, get_task

__all__ = [
    "DataConfig", "TaskData", "Split", "EncodedSplit", "RealBatch", "PackedBatch", "RealBatcher", "pack", "real_batches",
    "load_task_data", "read_table", "encode_split", "DEMO_DIR", "default_data_dir",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "assets" / "demo"
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl")
# A train split this small keeps every row for training; selection then falls back to the evaluation
# split, and the run says so (its events name that split).
MIN_TRAIN_FOR_DEV = 50


def default_data_dir() -> str | None:
    """The data directory named by the environment (`DISTILL_DATA_DIR`), if any."""
    return os.environ.get("DISTILL_DATA_DIR") or None


@dataclass
class DataConfig:
    """Where the real data comes from and how it is cut into batches."""

    task: str | None = BASE["data"]["task"]
    data_dir: str | None = BASE["data"]["data_dir"]  # <dir>/<task>/<split>.parquet|csv|tsv|jsonl; env DISTILL_DATA_DIR
    train_file: str | None = BASE["data"]["train_file"]  # custom data: both files, the text column(s) and the label column
    eval_file: str | None = BASE["data"]["eval_file"]
    text_columns: list[str] = field(default_factory=lambda: list(BASE["data"]["text_columns"]))
    label_column: str | None = BASE["data"]["label_column"]
    max_length: int = BASE["data"]["max_length"]  # tokens per real example (truncation)
    real_batch_size: int = BASE["data"]["real_batch_size"]
    train_rows: int | None = BASE["data"]["train_rows"]  # optional cap (random rows, fixed by seed)
    # Beyond the paper: keep only train rows of at least this many words (all text fields together), before
    # the dev split is carved. SST-2's train split holds every phrase of its parse trees (median 7 words)
    # while validation holds whole sentences (median 19); this trains and selects on sentence-like rows.
    train_min_words: int | None = BASE["data"]["train_min_words"]
    eval_rows: int | None = BASE["data"]["eval_rows"]  # optional cap on the evaluation split (periodic validation)
    allow_hub: bool = BASE["data"]["allow_hub"]
    seed: int = BASE["data"]["seed"]
    # The selection split: carved from train (stratified, seeded), never in real batches. Periodic
    # validation, `best` and every grid choice use it; the evaluation split is kept for reported numbers.
    dev_fraction: float = BASE["data"]["dev_fraction"]
    dev_max_rows: int = BASE["data"]["dev_max_rows"]
    # Beyond the paper: dev takes only rows no other train row contains, and the rows inside them leave
    # training (dev_split.py: SST-2's randomly carved dev rows sit inside a train row 9 times in 10).
    dev_disjoint: bool = BASE["data"]["dev_disjoint"]

    def validate(self) -> None:
        custom = self.train_file is not None or self.eval_file is not None
        if custom:
            if not (self.train_file and self.eval_file):
                raise UserError("custom data needs both --train-file and --eval-file")
            if not self.text_columns:
                raise UserError("custom data needs --text-column (once, or twice for sentence pairs)")
            if len(self.text_columns) > 2:
                raise UserError(f"--text-column given {len(self.text_columns)} times; at most 2 (a sentence pair)")
            if not self.label_column:
                raise UserError("custom data needs --label-column")
        elif not self.task:
            raise UserError("name a task (--task) or give custom data (--train-file/--eval-file)")
        else:
            get_task(self.task)
        if self.max_length < 8 or self.max_length > 512:
            raise UserError(f"max_length must be in [8, 512], got {self.max_length}")
        if self.real_batch_size < 1:
            raise UserError(f"real_batch_size must be >= 1, got {self.real_batch_size}")
        for name in ("train_rows", "eval_rows", "train_min_words"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"{name} must be >= 1 when set, got {v}")
        if not 0 <= self.dev_fraction <= 0.5:
            raise UserError(f"dev_fraction must be in [0, 0.5] (0: no dev split), got {self.dev_fraction}")
        if self.dev_max_rows < 1:
            raise UserError(f"dev_max_rows must be >= 1, got {self.dev_max_rows}")

    @property
    def is_custom(self) -> bool:
        return self.train_file is not None or self.eval_file is not None


@dataclass
class Split:
    """One split as plain Python: texts (a tuple of 1 or 2 strings each) and integer labels."""

    texts: list[tuple[str, ...]]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """A task's spec with its train and evaluation splits."""

    spec: TaskSpec
    train: Split
    eval: Split
    source: str
    dev: Split | None = None         # held out from train for selection (None: dev_fraction 0)

    @property
    def is_demo(self) -> bool:
        return self.spec.is_demo

    def majority_label(self) -> int:
        return int(np.bincount(self.train.labels, minlength=self.spec.num_labels).argmax())


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a csv/tsv/jsonl/parquet file, with errors that name the file."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"data file not found: {p}")
    if p.is_dir():
        raise UserError(f"expected a data file, got a directory: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix == ".csv":
            _check_delimited(p, ",", quoting=True)
            return pd.read_csv(p, keep_default_na=False)
        if suffix == ".tsv":
            import csv
            _check_delimited(p, "\t", quoting=False)
            return pd.read_csv(p, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
        if suffix == ".jsonl":
            return pd.read_json(p, lines=True)
    except UserError:
        raise
    except Exception as exc:  # parsers raise many types; the user needs the file name and the reason
        raise UserError(f"could not read {p}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    raise UserError(f"unsupported data file type {suffix!r} for {p}; use one of {', '.join(TABLE_SUFFIXES)}")


def _check_delimited(path: Path, delimiter: str, quoting: bool) -> None:
    """Refuse a csv/tsv whose rows do not have the header's number of fields, naming the line.

    pandas pads short rows with empty strings, so a broken file would otherwise surface much later
    as "a single class ('')" or as labels that are not labels.
    """
    import csv

    csv.field_size_limit(max(csv.field_size_limit(), 1 << 27))   # long texts are cut at max_length later
    with open(path, newline="", encoding="utf-8", errors="strict") as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=True,
                            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
        try:
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path} is empty (no header line)")
            for row in reader:
                if row and len(row) != len(header):
                    raise UserError(f"could not parse {path}: line {reader.line_num} has {len(row)} field(s) but the "
                                    f"header has {len(header)} ({', '.join(map(repr, header[:4]))}); "
                                    + ("quote texts that contain commas" if delimiter == "," else
                                       "a text that contains a tab?"))
        except csv.Error as exc:
            raise UserError(f"could not parse {path} near line {reader.line_num}: {exc}"
                            + (" (a quote that is never closed?)" if "end of data" in str(exc) else "")) from None
        except UnicodeDecodeError as exc:
            raise UserError(f"could not read {path}: it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _find_split_file(data_dir: Path, task: str, split: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        candidate = data_dir / task / f"{split}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _frame_to_split(frame: pd.DataFrame, text_fields: Sequence[str], label_field: str,
                    label_names: Sequence[str] | None, where: str, class_ids: bool) -> tuple[Split, list[str]]:
    """Turn a frame into a Split, checking columns and labels; returns the label names used.

    class_ids=True (registered tasks): labels are class indices 0..K-1 or the class names.
    class_ids=False (custom data): labels are looked up by their text (names from the train file).
    """
    missing = [c for c in (*text_fields, label_field) if c not in frame.columns]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"columns present: {', '.join(map(str, frame.columns))}")
    if len(frame) == 0:
        raise UserError(f"{where}: the split is empty")
    raw = frame[label_field]
    if raw.isna().any():
        raise UserError(f"{where}: column {label_field!r} has {int(raw.isna().sum())} empty label(s)")
    keys = [_label_key(v) for v in raw.tolist()]
    empty = [i for i, k in enumerate(keys) if k == ""]
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:5])
        raise UserError(f"{where}: {len(empty)} row(s) have an empty label in column {label_field!r} "
                        f"(data row(s) {rows}{', ...' if len(empty) > 5 else ''}, counting from 1 after the header)")
    if label_names is None:  # custom train file: its distinct labels, numbers in numeric order
        distinct = set(keys)
        numeric = all(k.lstrip("-").isdigit() for k in distinct)
        label_names = sorted(distinct, key=int) if numeric else sorted(distinct)
    names = list(label_names)
    index = {n: i for i, n in enumerate(names)}
    if class_ids:
        index.update({str(i): i for i in range(len(names))})
    labels = np.empty(len(frame), dtype=np.int64)
    bad: list[str] = []
    for i, key in enumerate(keys):
        if key in index:
            labels[i] = index[key]
        else:
            bad.append(key)
    if bad:
        shown = ", ".join(repr(b) for b in list(dict.fromkeys(bad))[:5])
        raise UserError(f"{where}: {len(bad)} label(s) in column {label_field!r} outside the task's labels "
                        f"{names} (e.g. {shown})")
    cols = [frame[c].tolist() for c in text_fields]
    texts = [tuple("" if t is None or (isinstance(t, float) and math.isnan(t)) else str(t) for t in row)
             for row in zip(*cols)]
    return Split(texts, labels, where), names


def _label_key(value) -> str:
    """A label as text: integers (also 1.0) as their digits, anything else as str."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _load_hub_split(spec: TaskSpec, split: str) -> tuple[pd.DataFrame | None, str]:
    """The split from the Hugging Face hub, or None and why not."""
    if not spec.hub_path:
        return None, "not on the hub"
    try:
        import datasets  # optional: the normal path for online users, never needed by tests
    except ImportError:
        return None, "the Hugging Face hub needs `pip install datasets`"
    try:
        return datasets.load_dataset(*spec.hub_path, split=split).to_pandas(), ""
    except Exception as exc:  # offline, unknown split, ...: the caller reports it with the paths tried
        return None, f"the Hugging Face hub failed: {type(exc).__name__}"


def load_task_data(cfg: DataConfig) -> TaskData:
    """Load train and evaluation splits for a registered task or custom files.

    Sources, in order: the data directory (setting, then `DISTILL_DATA_DIR`), the Hugging
    Face hub, and for the `demo` task the built-in files under assets/demo.
    """
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    if cfg.is_custom:
        spec0 = TaskSpec("custom", tuple(cfg.text_columns), (), label_field=cfg.label_column)
        train, names = _frame_to_split(read_table(cfg.train_file), spec0.text_fields, spec0.label_field,
                                       None, str(cfg.train_file), class_ids=False)
        _require_two_classes(train, names)
        evaluation, _ = _frame_to_split(read_table(cfg.eval_file), spec0.text_fields, spec0.label_field,
                                        names, str(cfg.eval_file), class_ids=False)
        spec = TaskSpec("custom", tuple(cfg.text_columns), tuple(names), label_field=cfg.label_column,
                        description=f"custom data from {cfg.train_file}")
        source = f"files {cfg.train_file}, {cfg.eval_file}"
    else:
        spec = get_task(cfg.task)
        splits: dict[str, Split] = {}
        sources = []
        data_dir = cfg.data_dir or default_data_dir()
        for role, split in (("train", spec.train_split), ("evaluation", spec.eval_split)):
            frame, where = None, None
            if spec.is_demo:
                path = _find_split_file(DEMO_DIR.parent, "demo", split)
                if path is not None:
                    frame, where = read_table(path), str(path)
            if frame is None and data_dir:
                if not Path(data_dir).is_dir():
                    raise UserError(f"data directory not found: {data_dir}")
                path = _find_split_file(Path(data_dir), spec.name, split)
                if path is not None:
                    frame, where = read_table(path), str(path)
            hub_note = ""
            if frame is None and cfg.allow_hub and not spec.is_demo:
                frame, hub_note = _load_hub_split(spec, split)
                where = f"hub {'/'.join(spec.hub_path)}:{split}"
            if frame is None:
                tried = f"{data_dir}/{spec.name}/{split}.{{parquet,csv,tsv,jsonl}}" if data_dir else "no data directory set"
                raise UserError(
                    f"task {spec.name!r} has no {role} split {split!r} here (tried {tried}"
                    f"{'; ' + hub_note if hub_note else ''}); "
                    + ("distillation never trains on the evaluation split" if role == "train" else "")
                )
            splits[role], _ = _frame_to_split(frame, spec.text_fields, spec.label_field, spec.label_names, where,
                                                class_ids=True)
            if role == "train":
                _require_two_classes(splits[role], spec.label_names)
            sources.append(where)
        train, evaluation = splits["train"], splits["evaluation"]
        source = ", ".join(sources)
    if cfg.train_min_words is not None:
        train = keep_min_words(train, cfg.train_min_words, spec.label_names)
    dev = None
    if cfg.dev_fraction > 0 and len(train) >= MIN_TRAIN_FOR_DEV:
        from .dev_split import carve_dev    # it builds on Split, defined here

        train, dev = carve_dev(train, spec.num_labels, cfg.dev_fraction, cfg.dev_max_rows, cfg.seed,
                               disjoint=cfg.dev_disjoint)
        _require_two_classes(train, spec.label_names)
    train = _cap(train, cfg.train_rows, rng)
    evaluation = _cap(evaluation, cfg.eval_rows, rng)
    if dev is not None:
        dev = _cap(dev, cfg.eval_rows, rng)
    return TaskData(spec, train, evaluation, source, dev)


def keep_min_words(train: Split, min_words: int, label_names: Sequence[str]) -> Split:
    """The train rows with at least `min_words` whitespace words over all their text fields."""
    keep = [i for i, t in enumerate(train.texts) if sum(len(x.split()) for x in t) >= min_words]
    if not keep:
        raise UserError(f"{train.source}: no train row has train_min_words={min_words} words or more")
    kept = Split([train.texts[i] for i in keep], train.labels[keep],
                 f"{train.source} (rows of >= {min_words} words: {len(keep)})")
    _require_two_classes(kept, label_names)
    return kept


def _require_two_classes(train: Split, names: Sequence[str]) -> None:
    if len(np.unique(train.labels)) < 2:
        raise UserError(f"{train.source}: the train split holds a single class "
                        f"({names[int(train.labels[0])]!r}); distillation needs at least 2")


def _cap(split: Split, rows: int | None, rng: np.random.Generator) -> Split:
    if rows is None or rows >= len(split):
        return split
    keep = np.sort(rng.choice(len(split), size=rows, replace=False))
    return Split([split.texts[i] for i in keep], split.labels[keep], f"{split.source} ({rows} random rows)")


@dataclass
class EncodedSplit:
    """Token ids per example (unpadded) plus labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a tokenizer builds one list per example.

    Those lists hold no cycles, but each few hundred of them start a collection that walks every
    object built so far: tokenising SST-2's 67k training sentences took 2.0-2.3 s with the
    collector running and 1.1-1.2 s with it paused.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def encode_split(split: Split, tokenizer, max_length: int) -> EncodedSplit:
    """Tokenise a split once: [CLS] a [SEP] (b [SEP]), truncated to max_length."""
    firsts = [t[0] for t in split.texts]
    seconds = [t[1] for t in split.texts] if split.texts and len(split.texts[0]) > 1 else None
    with _collector_paused():
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return EncodedSplit(enc["input_ids"], types, torch.as_tensor(split.labels, dtype=torch.long))


@dataclass
class RealBatch:
    """One padded (micro-)batch of real examples."""

    input_ids: torch.Tensor        # (B, S)
    token_type_ids: torch.Tensor   # (B, S)
    attention_mask: torch.Tensor   # (B, S)
    labels: torch.Tensor           # (B,)

    def to(self, device: torch.device) -> "RealBatch":
        return RealBatch(*(t.to(device, non_blocking=True) for t in
                           (self.input_ids, self.token_type_ids, self.attention_mask, self.labels)))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def collate(encoded: EncodedSplit, indices: Sequence[int], pad_id: int = 0, multiple_of: int = 8) -> RealBatch:
    """Pad the chosen examples to their longest (rounded up to a multiple of 8)."""
    longest = max(len(encoded.input_ids[i]) for i in indices)
    width = int(math.ceil(longest / multiple_of) * multiple_of)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(indices), width), dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        n = len(encoded.input_ids[i])
        ids[row, :n] = torch.as_tensor(encoded.input_ids[i])
        types[row, :n] = torch.as_tensor(encoded.token_type_ids[i])
        mask[row, :n] = 1
    return RealBatch(ids, types, mask, encoded.labels[list(indices)])


@dataclass
class PackedBatch:
    """Several examples packed end to end into each row, with a block-diagonal attention mask.

    Exactly equivalent to padding each example on its own (no token attends across examples,
    positions restart at 0), but the encoder only computes real tokens.
    """

    input_ids: torch.Tensor        # (R, W)
    token_type_ids: torch.Tensor   # (R, W)
    position_ids: torch.Tensor     # (R, W)
    attention_mask: torch.Tensor   # (R, 1, W, W) bool, True = may attend
    cls_index: torch.Tensor        # (B,) flat index (row * W + offset) of each example's [CLS]
    labels: torch.Tensor           # (B,)
    order: list[int]               # example indices, in the order of cls_index

    def to(self, device: torch.device) -> "PackedBatch":
        return PackedBatch(*(t.to(device, non_blocking=True) for t in
                             (self.input_ids, self.token_type_ids, self.position_ids, self.attention_mask,
                              self.cls_index, self.labels)), self.order)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def pack(encoded: EncodedSplit, indices: Sequence[int], row_tokens: int = 512) -> PackedBatch:
    """First-fit-decreasing packing of examples into rows of at most `row_tokens` tokens.

    The budget grows to the longest example, so one long example does not leave every other row
    padded out to its length.
    """
    rows: list[list[int]] = []
    fill: list[int] = []
    row_tokens = max(row_tokens, max(len(encoded.input_ids[i]) for i in indices))
    for i in sorted(indices, key=lambda j: -len(encoded.input_ids[j])):
        n = len(encoded.input_ids[i])
        for r in range(len(rows)):
            if fill[r] + n <= row_tokens:
                rows[r].append(i)
                fill[r] += n
                break
        else:
            rows.append([i])
            fill.append(n)
    width = int(math.ceil(max(fill) / 8) * 8)
    R = len(rows)
    ids = torch.zeros((R, width), dtype=torch.long)
    types = torch.zeros_like(ids)
    positions = torch.zeros_like(ids)
    mask = torch.zeros((R, 1, width, width), dtype=torch.bool)
    cls, order = [], []
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            n = len(encoded.input_ids[i])
            ids[r, offset:offset + n] = torch.as_tensor(encoded.input_ids[i])
            types[r, offset:offset + n] = torch.as_tensor(encoded.token_type_ids[i])
            positions[r, offset:offset + n] = torch.arange(n)
            mask[r, 0, offset:offset + n, offset:offset + n] = True
            cls.append(r * width + offset)
            order.append(i)
            offset += n
        tail = torch.arange(offset, width)
        mask[r, 0, tail, tail] = True  # padding attends to itself only: no empty softmax rows
    return PackedBatch(ids, types, positions, mask, torch.as_tensor(cls), encoded.labels[order], order)


def split_by_length(encoded: EncodedSplit, indices: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Cut one batch into length-sorted micro-batches of at most `max_tokens` padded positions.

    The loss over the whole batch is the size-weighted sum of the micro-batch losses, so the
    gradient is unchanged; sorting by length removes most of the padding of short-text tasks.
    """
    order = sorted(indices, key=lambda i: len(encoded.input_ids[i]))
    if not max_tokens:
        return [list(order)]
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending length: the newest element is the longest of its chunk
        width = int(math.ceil(len(encoded.input_ids[i]) / 8) * 8)
        if current and width * (len(current) + 1) > max_tokens:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


# Rows of real training batches: attention inside a packed row is mostly masked-out work, so rows
# barely longer than a sentence are fastest (measured: 64-token rows 0.176 s, 512-token rows 0.203 s
# for the first-order pass of an SST-2 batch of 32); pack() widens them for longer examples.
TRAIN_ROW_TOKENS = 64


def real_batches(encoded: EncodedSplit, indices: Sequence[int], packing: bool, micro_batch_tokens: int | None = 512,
                 row_tokens: int = TRAIN_ROW_TOKENS, pad_id: int = 0) -> list[RealBatch] | list[PackedBatch]:
    """One batch of real examples: packed (see pack), or as length-sorted micro-batches (see split_by_length)."""
    if packing:
        return [pack(encoded, indices, row_tokens)]
    return [collate(encoded, chunk, pad_id) for chunk in split_by_length(encoded, indices, micro_batch_tokens)]


class RealBatcher:
    """Endless random mini-batches over the train split, epoch by epoch, reproducible by seed."""

    def __init__(self, encoded: EncodedSplit, batch_size: int, seed: int = 0, pad_id: int = 0,
                 micro_batch_tokens: int | None = 512, packing: bool = False, row_tokens: int = TRAIN_ROW_TOKENS,
                 word_dropout: float = 0.0, keep_ids: frozenset[int] = frozenset()):
        """word_dropout (beyond the paper): each drawn example loses that share of its tokens, drawn afresh
        every batch from a generator of its own; tokens in keep_ids ([CLS], [SEP]) always stay."""
        self.encoded = encoded
        self.word_dropout = word_dropout
        self.keep_ids = keep_ids
        self.dropout_generator = torch.Generator().manual_seed(seed + 7919) if word_dropout else None
        self.packing = packing
        self.row_tokens = row_tokens
        self.batch_size = min(batch_size, len(encoded))
        self.pad_id = pad_id
        self.micro_batch_tokens = micro_batch_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self._order: list[int] = []
        self.epoch = 0
        self.batches_drawn = 0

    def next_indices(self) -> list[int]:
        if len(self._order) < self.batch_size:
            self._order.extend(torch.randperm(len(self.encoded), generator=self.generator).tolist())
            self.epoch += 1
        idx, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        self.batches_drawn += 1
        return idx

    def next(self) -> list[RealBatch] | list[PackedBatch]:
        """The next batch (see real_batches)."""
        indices = self.next_indices()
        if self.dropout_generator is None:
            return real_batches(self.encoded, indices, self.packing, self.micro_batch_tokens,
                                self.row_tokens, self.pad_id)
        thinned = self._without_some_words(indices)
        return real_batches(thinned, range(len(thinned)), self.packing, self.micro_batch_tokens,
                            self.row_tokens, self.pad_id)

    def _without_some_words(self, indices: Sequence[int]) -> EncodedSplit:
        ids, types = [], []
        for i in indices:
            row, kinds = self.encoded.input_ids[i], self.encoded.token_type_ids[i]
            drop = (torch.rand(len(row), generator=self.dropout_generator) < self.word_dropout).tolist()
            kept = [j for j, t in enumerate(row) if t in self.keep_ids or not drop[j]]
            ids.append([row[j] for j in kept])
            types.append([kinds[j] for j in kept])
        return EncodedSplit(ids, types, self.encoded.labels[torch.as_tensor(list(indices))])

    def state(self) -> dict:
        state = {"generator": self.generator.get_state().tolist(), "order": list(self._order),
                 "epoch": self.epoch, "batches_drawn": self.batches_drawn}
        if self.dropout_generator is not None:
            state["dropout_generator"] = self.dropout_generator.get_state().tolist()
        return state

    def load_state(self, state: dict) -> None:
        if self.dropout_generator is not None and "dropout_generator" in state:
            self.dropout_generator.set_state(torch.tensor(state["dropout_generator"], dtype=torch.uint8))
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self._order = list(state["order"])
        self.epoch = int(state["epoch"])
        self.batches_drawn = int(state["batches_drawn"])

    def __iter__(self) -> Iterator[list[RealBatch]]:
        while True:
            yield self.next()


def split_by_exact_length(encoded: EncodedSplit, indices: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Batches whose examples all have the same length (at most about `max_tokens` tokens each).

    Such a batch needs no padding and no attention mask: every position is a real token and the
    attention is dense, which beats packing (its block-diagonal mask spends most attention work
    on masked-out pairs) when a split is scored whole.
    """
    by_length: dict[int, list[int]] = {}
    for i in indices:
        by_length.setdefault(len(encoded.input_ids[i]), []).append(i)
    chunks = []
    for n in sorted(by_length):
        group, per = by_length[n], max(1, max_tokens // n)
        chunks.extend(group[s:s + per] for s in range(0, len(group), per))
    return chunks


def iterate_eval_batches(encoded: EncodedSplit, max_tokens: int = 4096, pad_id: int = 0, packing: bool = False,
                         row_tokens: int = 512, same_length: bool = False) -> list[tuple[list[int], RealBatch | PackedBatch]]:
    """The whole split in batches of at most about `max_tokens` positions: same-length, packed, or padded by length."""
    if same_length:
        return [(chunk, collate(encoded, chunk, pad_id, multiple_of=1))
                for chunk in split_by_exact_length(encoded, range(len(encoded)), max_tokens)]
    chunks = split_by_length(encoded, range(len(encoded)), max_tokens)
    if packing:  # an example longer than row_tokens gets a row of its own
        return [(b.order, b) for b in (pack(encoded, chunk, row_tokens) for chunk in chunks)]
    return [(chunk, collate(encoded, chunk, pad_id)) for chunk in chunks]
