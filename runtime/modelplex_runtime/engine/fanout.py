"""A request's n sequences: one handle to cancel them all, and one shared prefill.

The batcher prefills one leader per group admitted together, then copies its KV cache rows and last
logits to the siblings (``rows``), which then sample independently (sibling i seeded with seed + i).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Group:
    members: list[Any] = field(default_factory=list)

    def cancel(self) -> None:
        for seq in self.members:
            seq.cancel()


def leaders(seqs: list[Any]) -> tuple[list[Any], list[int] | None]:
    """The sequences to prefill, and for each of ``seqs`` the row of its leader (None: every sequence
    is its own leader)."""
    firsts: dict[int, int] = {}
    unique: list[Any] = []
    rows: list[int] = []
    for seq in seqs:
        key = id(seq.group) if seq.group is not None else id(seq)
        if key not in firsts:
            firsts[key] = len(unique)
            unique.append(seq)
        rows.append(firsts[key])
    return unique, (None if len(unique) == len(seqs) else rows)
