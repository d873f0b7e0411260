"""Pure parts of batching: the column layout, and the signed-sin rotation tables."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.layout import PAD, BatchLayout
from tempo_lens.rope import apply_rotation, delta_cos_sin, rerotate, rotation_tables


def test_layout_pads_each_block_to_the_widest_row() -> None:
    lay = BatchLayout(3)
    assert lay.append([[0, 1, 2], [0], [0, 1]]) == 0
    assert lay.append([[3], [1, 2, 3], []]) == 3
    assert lay.columns == [[0, 1, 2, 3, PAD, PAD], [0, PAD, PAD, 1, 2, 3], [0, 1, PAD] + [PAD] * 3]
    assert lay.attention_mask(3).tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert lay.column_of(1, [1, 3]) == [3, 5]
    assert lay.n_real_before(1, 4) == 2
    v = lay.version
    assert lay.select([1, 0]) == [0, 1, 2, 3, 4, 5]
    assert lay.select([0]) == [0, 3, 4, 5]  # columns only the other row used are gone
    assert lay.columns == [[0, 1, 2, 3]] and lay.version == v + 2
    with pytest.raises(ValueError, match="2 rows of indices for 1"):
        lay.append([[4], [5]])
    with pytest.raises(ValueError, match="at least one row"):
        BatchLayout(0)


@pytest.mark.parametrize("adjacent", [False, True])
@pytest.mark.parametrize("rotary_dim", [8, 4])
def test_signed_sin_tables_are_bit_identical_to_rerotate(adjacent, rotary_dim) -> None:
    g = torch.Generator().manual_seed(0)
    inv = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    x = torch.randn(2, 5, 3, 8, generator=g)
    delta = torch.randn(2, 5, generator=g, dtype=torch.float64) * 40
    cos, sin = rotation_tables(delta, inv, adjacent_pairs=adjacent, dtype=torch.float32)
    got = apply_rotation(x, cos, sin, adjacent_pairs=adjacent)
    for b in range(2):  # the reference: one row at a time, unsigned tables, rotate_half
        c, s = delta_cos_sin(delta[b], inv, adjacent_pairs=adjacent)
        want = rerotate(x[b : b + 1], c, s, rotary_dim=rotary_dim, adjacent_pairs=adjacent)
        assert torch.equal(got[b : b + 1], want)
    one = rotation_tables(delta[:1], inv, adjacent_pairs=adjacent, dtype=torch.float32)
    broadcast = apply_rotation(x, *one, adjacent_pairs=adjacent)  # one table, every row
    assert torch.equal(broadcast[1:], apply_rotation(x[1:], *one, adjacent_pairs=adjacent))
