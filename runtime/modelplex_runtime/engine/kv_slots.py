"""The running batch's KV cache: one preallocated buffer per layer, one row (slot) per sequence.

Layout per layer: keys and values of shape ``[slots, kv_heads, columns, head_dim]``. A sequence owns a
row; the token at position ``p`` lives in column ``p``. Nothing is left-padded and nothing moves when
sequences join or leave: a new token is one in-place write, where a concatenated cache copied every
layer's whole cache on every step.

The buffer grows on demand (rows by doubling, columns by a quarter), and each growth is a rebuild
that also compacts the live rows to the front. Its size, ``slots x columns`` tokens, never exceeds
``budget_tokens``: the decisions about what fits are the pure functions at the end of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

COLUMN_ALIGN = 64  # columns are allocated in multiples of this


@dataclass(frozen=True)
class KVShape:
    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device

    @property
    def bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


# torch.zeros' signature (tests pass a device that runs out of memory). Zeros, not torch.empty: attention
# multiplies the masked columns' values by 0, and 0 x a NaN left in recycled memory is NaN.
Allocate = Callable[..., torch.Tensor]


class SlotCache:
    def __init__(self, shape: KVShape, budget_tokens: int, max_slots: int, allocate: Allocate = torch.zeros) -> None:
        self.shape = shape
        self.budget_tokens = budget_tokens
        self.max_slots = max_slots
        self._allocate = allocate
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slots = 0
        self.columns = 0

    @property
    def tokens(self) -> int:
        return self.slots * self.columns

    @property
    def bytes(self) -> int:
        return self.tokens * self.shape.bytes_per_token

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[index], self.values[index]

    def rebuild(self, live_rows: Sequence[int], slots: int, columns: int) -> None:
        """Reallocate as ``slots x columns`` and copy ``live_rows`` (in that order) to rows 0, 1, ...

        The new buffers are allocated before the old ones are dropped, so a failed allocation
        (out of memory) leaves the cache as it was.
        """
        assert len(live_rows) <= slots <= self.max_slots and slots * columns <= self.budget_tokens
        s = self.shape
        keys, values = [], []
        for _ in range(s.layers):
            keys.append(self._allocate((slots, s.kv_heads, columns, s.head_dim), dtype=s.dtype, device=s.device))
            values.append(self._allocate((slots, s.kv_heads, columns, s.head_dim), dtype=s.dtype, device=s.device))
        if live_rows and self.keys:
            index = torch.tensor(list(live_rows), dtype=torch.long, device=s.device)
            width = min(columns, self.columns)
            n = len(live_rows)
            for old, new in zip(self.keys + self.values, keys + values, strict=True):
                new[:n, :, :width] = old[:, :, :width].index_select(0, index)
        self.keys, self.values, self.slots, self.columns = keys, values, slots, columns

    def copy_prefix(self, source: int, targets: Sequence[int], columns: int) -> None:
        """Copy the first ``columns`` tokens of row ``source`` into each of the rows ``targets`` (a request's
        n sequences start from one prefill)."""
        index = torch.tensor(list(targets), dtype=torch.long, device=self.shape.device)
        for buffer in self.keys + self.values:
            buffer[index, :, :columns] = buffer[source, :, :columns]

    def clear(self) -> None:
        self.keys, self.values, self.slots, self.columns = [], [], 0, 0


def round_columns(needed: int, limit: int) -> int:
    return max(needed, min(limit, -(-needed // COLUMN_ALIGN) * COLUMN_ALIGN))


def capacity(slots: int, columns: int, rows: int, cols: int, max_slots: int, column_limit: int,
             budget_tokens: int) -> tuple[int, int] | None:
    """The buffer size (slots, columns) that holds ``rows`` sequences of up to ``cols`` tokens, starting from
    the current size; None when no size within ``budget_tokens`` does.

    Rows grow by doubling and columns by a quarter at least, so a batch that generates token by token
    rebuilds a handful of times, not every few tokens. Near the budget, growth keeps the columns and
    settles for fewer spare rows, then for as many columns as the rows leave room for.
    """
    if rows > max_slots or rows * cols > budget_tokens:
        return None
    new_slots = slots if rows <= slots else min(max_slots, max(rows, 2 * slots))
    new_cols = columns if cols <= columns else round_columns(max(cols, min(column_limit, columns + columns // 4)),
                                                             column_limit)
    if new_slots * new_cols <= budget_tokens:
        return new_slots, new_cols
    if rows * new_cols <= budget_tokens:
        return min(new_slots, budget_tokens // new_cols), new_cols
    return rows, budget_tokens // rows
