"""`Sparse`: a labelled sparse matrix held as numpy arrays, for constructions with ~10^6 weights.

Entry i is (rows[r[i]], cols[c[i]]) = v[i]; entries keep the order they were added in, and
`coalesce` sums repeated entries into the first one (as a dict would) and drops zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np


@dataclass
class Sparse:
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    r: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    c: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    v: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    @staticmethod
    def of(rows: Sequence[str], cols: Sequence[str], r: np.ndarray, c: np.ndarray, v: np.ndarray) -> "Sparse":
        return Sparse(list(rows), list(cols), np.asarray(r, np.int64), np.asarray(c, np.int64),
                      np.asarray(v, np.float64))

    @staticmethod
    def from_entries(entries: Iterable[tuple[str, str, float]]) -> "Sparse":
        rows: dict[str, int] = {}
        cols: dict[str, int] = {}
        r, c, v = [], [], []
        for a, b, x in entries:
            r.append(rows.setdefault(a, len(rows)))
            c.append(cols.setdefault(b, len(cols)))
            v.append(x)
        return Sparse.of(list(rows), list(cols), np.array(r, np.int64), np.array(c, np.int64), np.array(v, np.float64))

    @staticmethod
    def from_dict(entries: Mapping[tuple[str, str], float]) -> "Sparse":
        return Sparse.from_entries((a, b, x) for (a, b), x in entries.items())

    def entries(self) -> list[tuple[str, str, float]]:
        return [(self.rows[a], self.cols[b], x) for a, b, x in zip(self.r.tolist(), self.c.tolist(), self.v.tolist())]

    def to_dict(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for a, b, x in self.entries():
            out[(a, b)] = out.get((a, b), 0.0) + x
        return out

    def __len__(self) -> int:
        return int(self.v.size)

    def plus(self, other: "Sparse") -> "Sparse":
        """Both matrices' entries, this one's first (not coalesced)."""
        if not len(other):
            return self
        rows, cols = list(self.rows), list(self.cols)
        r_pos = {x: i for i, x in enumerate(rows)}
        c_pos = {x: i for i, x in enumerate(cols)}
        for labels, pos, new in ((rows, r_pos, other.rows), (cols, c_pos, other.cols)):
            for x in new:
                if x not in pos:
                    pos[x] = len(labels)
                    labels.append(x)
        r_map = np.array([r_pos[x] for x in other.rows], np.int64)
        c_map = np.array([c_pos[x] for x in other.cols], np.int64)
        return Sparse.of(rows, cols, np.concatenate([self.r, r_map[other.r] if other.r.size else other.r]),
                         np.concatenate([self.c, c_map[other.c] if other.c.size else other.c]),
                         np.concatenate([self.v, other.v]))

    def coalesce(self) -> "Sparse":
        """Repeated (row, column) entries summed into the first; zeros dropped."""
        if not self.v.size:
            return self
        key = self.r * max(len(self.cols), 1) + self.c
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        sums = np.zeros(len(uniq), np.float64)
        np.add.at(sums, inverse, self.v)
        order = np.argsort(first, kind="stable")
        keep = order[sums[order] != 0.0]
        return Sparse.of(self.rows, self.cols, self.r[first[keep]], self.c[first[keep]], sums[keep])

    def used_rows(self) -> set[str]:
        return {self.rows[i] for i in np.flatnonzero(np.bincount(self.r, minlength=len(self.rows)))}

    def used_cols(self) -> set[str]:
        return {self.cols[i] for i in np.flatnonzero(np.bincount(self.c, minlength=len(self.cols)))}

    def add(self, entries: Iterable[tuple[str, str, float]]) -> "Sparse":
        """A few more entries: summed into existing ones at the same (row, column), else appended.
        Cheaper than plus + coalesce on a big matrix (no sort of all its entries)."""
        extra = Sparse.from_entries(entries)
        if not len(extra):
            return self
        overlap = set(extra.used_rows()) & set(self.rows) and set(extra.used_cols()) & set(self.cols)
        merged = self.plus(extra)
        if overlap:
            return merged.coalesce()
        return merged

    def row_sums(self, col_weights: Mapping[str, float]) -> dict[str, float]:
        """Per row label with entries: sum of value * col_weights[column] (in row label order)."""
        if not self.v.size:
            return {}
        w = np.array([col_weights.get(x, 0.0) for x in self.cols], np.float64)
        sums = np.bincount(self.r, weights=self.v * w[self.c], minlength=len(self.rows))
        used = np.bincount(self.r, minlength=len(self.rows)) > 0
        return {self.rows[i]: float(sums[i]) for i in np.flatnonzero(used)}

    def col_sums(self, row_weights: Mapping[str, float]) -> dict[str, float]:
        """Per column label with entries: sum of value * row_weights[row] (in column label order)."""
        flipped = Sparse(self.cols, self.rows, self.c, self.r, self.v)
        return flipped.row_sums(row_weights)


__all__ = ["Sparse"]
