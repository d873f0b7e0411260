"""Several TEMPO sequences in one batch: which token of which row sits in each column.

:func:`tempo_lens.generate_batch` runs ``B`` independent TEMPO sequences through one
forward. Every row keeps its own :class:`~tempo_lens.SequenceState` with its own,
gap-free physical indices, but the batch tensor ``[batch, pos]`` needs the same number of
columns in every row, and the rows' prompts and parallel sets have different lengths. A
:class:`BatchLayout` pads every appended block (the prompts, then each step's sets) to the
widest row with **pad slots** (:data:`PAD`) and records, for every row and column, the
physical index of the token there (or :data:`PAD`).

Pad slots are invisible: forwards pass :meth:`BatchLayout.attention_mask` (``0`` at pads),
which TransformerLens uses to hide pad keys from every query and to give each real token
the rotary position ``number of real tokens before it`` — exactly its physical index in its
row, so every row is rotated exactly as it would be alone. The TEMPO mask hook hides pad
keys as well, and the queries of pad slots are never read.

Column order equals physical order within a row (tokens are appended in order), so the
causal rule over columns and the causal rule over physical indices agree for real tokens.

Example:
    >>> layout = BatchLayout(2)
    >>> layout.append([[0, 1, 2], [0, 1]])  # prompts of 3 and 2 tokens
    0
    >>> layout.append([[3, 4], [2]])  # step 0: sets of 2 and 1 members
    3
    >>> layout.columns
    [[0, 1, 2, 3, 4], [0, 1, -1, 2, -1]]
    >>> layout.attention_mask().tolist()
    [[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["PAD", "BatchLayout"]

PAD = -1
"""Physical index recorded for a pad slot."""


class BatchLayout:
    """Columns of a batch of TEMPO sequences mapped to each row's physical indices.

    Args:
        n_rows: Number of sequences (batch rows).

    Attributes:
        columns: Per row, per column: the physical index of the row's token there, or
            :data:`PAD`.
        version: Bumped by every :meth:`append` (hooks memoise on it).
    """

    def __init__(self, n_rows: int) -> None:
        if n_rows < 1:
            raise ValueError(f"a batch needs at least one row, got {n_rows}")
        self.columns: list[list[int]] = [[] for _ in range(n_rows)]
        self.version = 0
        self._tensor: tuple[int, Tensor] | None = None

    @property
    def n_rows(self) -> int:
        """Number of batch rows."""
        return len(self.columns)

    @property
    def n_columns(self) -> int:
        """Number of columns (the same in every row)."""
        return len(self.columns[0])

    def append(self, indices: Sequence[Sequence[int]]) -> int:
        """Append one block: each row's new physical indices, padded to the widest row.

        Args:
            indices: One list per row (empty for a row that adds nothing, e.g. a row
                that has stopped).

        Returns:
            The first column of the block.
        """
        if len(indices) != self.n_rows:
            raise ValueError(f"got {len(indices)} rows of indices for {self.n_rows} rows")
        start = self.n_columns
        width = max(len(ix) for ix in indices)
        for row, ix in zip(self.columns, indices, strict=True):
            row += [int(i) for i in ix] + [PAD] * (width - len(ix))
        self.version += 1
        return start

    def tensor(self) -> Int[Tensor, "batch pos"]:
        """The column map as a ``[batch, pos]`` long tensor (CPU, memoised)."""
        if self._tensor is None or self._tensor[0] != self.version:
            self._tensor = (self.version, torch.tensor(self.columns, dtype=torch.long))
        return self._tensor[1]

    def attention_mask(
        self, start: int = 0, device: torch.device | str | None = None
    ) -> Int[Tensor, "batch pos"]:
        """``1`` at real tokens, ``0`` at pad slots, for columns ``start..`` (TL's format)."""
        return (self.tensor()[:, start:] != PAD).long().to(device)

    def select(self, rows: Sequence[int]) -> list[int]:
        """Keep only ``rows`` (in that order) and the columns where one has a real token.

        Returns:
            The kept columns (old numbering), e.g. to select the KV cache.
        """
        kept = [self.columns[r] for r in rows]
        cols = [c for c in range(self.n_columns) if any(row[c] != PAD for row in kept)]
        self.columns = [[row[c] for c in cols] for row in kept]
        self.version += 1
        return cols

    def column_of(self, row: int, indices: Sequence[int]) -> list[int]:
        """Columns of the given physical indices of one row."""
        where = {p: c for c, p in enumerate(self.columns[row]) if p != PAD}
        return [where[int(i)] for i in indices]

    def n_real_before(self, row: int, column: int) -> int:
        """Number of real tokens of ``row`` in columns ``< column``."""
        return sum(p != PAD for p in self.columns[row][:column])
