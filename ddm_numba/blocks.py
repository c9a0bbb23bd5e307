"""Row blocks: work on K states with N-wide intermediates (φ(M z + c), say) without ever holding
a K×N array.

Memory then follows the problem (N, d), not the data (K): a fit from a million increments at
N = 256 would otherwise allocate 2 GB for every K×N temporary, and numpy expressions make several.
BLOCK_ELEMENTS elements per intermediate (16 MB of float64) keeps each block long enough that
BLAS, not the Python loop, sets the speed (a block is at least MIN_ROWS rows).
"""
BLOCK_ELEMENTS = 1 << 21
MIN_ROWS = 256


def row_blocks(n, width):
    """Slices covering range(n), each of at most max(MIN_ROWS, BLOCK_ELEMENTS // width) rows."""
    size = max(MIN_ROWS, BLOCK_ELEMENTS // max(int(width), 1))
    return (slice(i, min(n, i + size)) for i in range(0, n, size))
