"""Names: SSA name hints from labels, and fresh (unique) names."""

from __future__ import annotations

import re
from typing import Iterable

_SSA_NAME = re.compile(r"[^A-Za-z0-9_.$-]")


def ssa_name(label: str) -> str:
    """A valid SSA name hint for a label (`opp_idx-1` stays, `shift_by(1)` becomes `shift_by_1_`)."""
    name = _SSA_NAME.sub("_", label)
    if not name or not (name[0].isalpha() or name[0] == "_"):
        name = "_" + name
    return name


class FreshNames:
    """Hands out unique names: `base`, then `base.2`, `base.3`, ... (or with another separator)."""

    def __init__(self, taken: Iterable[str] = (), sep: str = "."):
        self.used = set(taken)
        self.sep = sep

    def __call__(self, base: str) -> str:
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}{self.sep}{n}"
        self.used.add(name)
        return name


__all__ = ["ssa_name", "FreshNames"]
