"""The selection split: a seeded, stratified share of train that no real batch ever draws from.

Two ways to carve it:
- by row (the default): any train row may go to dev;
- disjoint (`dev_disjoint`, beyond the paper): dev takes only rows whose text no other train row
  contains, and every train row whose text lies inside a dev row leaves training. SST-2's train split
  holds every phrase of every parse tree, so a row carved at random sits verbatim inside a longer train
  row nine times in ten (measured on 1,000 random rows: 898): such a dev split scores what training
  already saw in part. Disjoint, SST-2's dev rows are whole sentences whose phrases never reach a real
  batch, like its validation split. On splits whose rows do not overlap (MRPC, AG News) both ways
  carve alike.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Sequence

import numpy as np

from .data import Split
from .errors import UserError

__all__ = ["carve_dev", "dev_size", "Containment", "uncontained_rows"]

_SEP = "\t"     # between a pair's texts: never inside a text field that read_table accepted as one cell


def dev_size(n_train: int, fraction: float, max_rows: int) -> int:
    # at least 100 rows (or a fifth of a small train split): a dev split of 15 rows would make every
    # validation point and every choice a coin toss
    return min(max_rows, max(1, round(fraction * n_train), min(100, n_train // 5)))


def carve_dev(train: Split, num_labels: int, fraction: float, max_rows: int, seed: int,
              disjoint: bool = False) -> tuple[Split, Split]:
    """(train without the dev rows, dev): a seeded, stratified share of train, at most max_rows rows.

    Each class gives the same fraction of its rows (at least one where it has two or more), so dev
    has train's class balance; the same seed always carves the same rows. Small train splits give at
    least min(100, a fifth) of their rows. With `disjoint`, dev rows are drawn only from rows no other
    row contains, and the rows inside a dev row are dropped from train (the module's docstring says why).
    """
    rng = np.random.default_rng([seed, 0xDE5])
    total = dev_size(len(train), fraction, max_rows)
    share = total / len(train)
    texts = [_SEP.join(t) for t in train.texts]
    index = Containment(texts) if disjoint else None
    picks = []
    for c in range(num_labels):
        pool = np.flatnonzero(train.labels == c)
        if len(pool) < 2:
            continue
        n = min(len(pool) - 1, max(1, round(share * len(pool))))
        if index is None:
            picks.append(rng.choice(pool, size=n, replace=False))
        else:
            found = _first_uncontained(index, rng.permutation(pool), n)
            if len(found):
                picks.append(found)
    chosen = np.sort(np.concatenate(picks)) if picks else np.array([], dtype=np.int64)
    if len(chosen) == 0:
        why = " no row is free of overlap with another (dev_disjoint)" if disjoint else ""
        raise UserError(f"{train.source}: too few train rows to carve a dev split;{why} set dev_fraction 0")
    mask = np.zeros(len(train), dtype=bool)
    mask[chosen] = True
    dropped = 0
    if disjoint:
        inside = index.inside(chosen) & ~mask
        dropped = int(inside.sum())
        mask |= inside
    rest = np.flatnonzero(~mask)
    how = f"dev: {len(chosen)} rows" + (f" no other row contains; {dropped} rows inside them left out" if disjoint else "")
    dev = Split([train.texts[i] for i in chosen], train.labels[chosen], f"{train.source} ({how})")
    kept = Split([train.texts[i] for i in rest], train.labels[rest],
                 f"{train.source} (minus {len(chosen)} dev rows" + (f" and {dropped} inside them)" if disjoint else ")"))
    return kept, dev


def _padded(text: str) -> str:
    # word-aligned containment: " good " is inside " a good film " but not inside " goodness "; a pair's
    # two texts stay apart (" a \t b "), so no run of words matches across their boundary
    return " " + " \t ".join(" ".join(field.split()) for field in text.split(_SEP)) + " "


class Containment:
    """Which rows' texts occur in no other row (as a run of whole words); duplicated texts never do.

    A row can only lie inside a longer row, so each is searched only among the longer ones, joined into
    one string sorted longest first: a phrase that does occur is found near the start of its search, and
    a whole sentence is searched only among the few rows longer than itself.
    """

    def __init__(self, texts: Sequence[str]):
        self.padded = [_padded(t) for t in texts]
        self.counts = Counter(self.padded)
        order = sorted(range(len(self.padded)), key=lambda i: -len(self.padded[i]))
        self.neg_lengths = [-len(self.padded[i]) for i in order]
        self.ends = list(np.cumsum([len(self.padded[i]) + 1 for i in order]))
        self.joined = "\n".join(self.padded[i] for i in order)

    def uncontained(self, i: int) -> bool:
        p = self.padded[i]
        if self.counts[p] > 1:
            return False
        longer = bisect.bisect_left(self.neg_lengths, -len(p))     # rows strictly longer than this one
        end = int(self.ends[longer - 1]) if longer else 0
        return self.joined.find(p, 0, end) < 0

    def inside(self, containers: Sequence[int]) -> np.ndarray:
        """A mask of the rows whose text occurs (as a run of whole words) inside any of the rows `containers`."""
        joined = "\n".join(self.padded[i] for i in containers)
        return np.array([joined.find(p) >= 0 for p in self.padded], dtype=bool)


def uncontained_rows(texts: Sequence[str]) -> np.ndarray:
    """A mask of the rows whose text occurs in no other row (`Containment`)."""
    index = Containment(texts)
    return np.array([index.uncontained(i) for i in range(len(texts))], dtype=bool)


def _first_uncontained(index: Containment, order: np.ndarray, n: int) -> np.ndarray:
    # checked lazily in the seeded order: a dev split needs a few thousand of them, not all
    out = []
    for i in order:
        if len(out) == n:
            break
        if index.uncontained(int(i)):
            out.append(int(i))
    return np.array(out, dtype=np.int64)

