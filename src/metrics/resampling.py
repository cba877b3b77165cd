"""Bootstrap draws as weight blocks: one matrix product scores a whole block of resamples (torch-free, so
``src.compare`` can use it without importing the training stack)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def resample_weights(num_rows: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """Yield blocks of resample weights: row ``b`` counts how often each data row is drawn in resample ``b``.

    Resample ``b`` is the ``b``-th ``rng.integers(0, num_rows, size=num_rows)`` call on ``rng = default_rng(seed)``,
    exactly what a naive loop ``for b in range(n): rows = rng.integers(...)`` would draw.
    """
    rng = np.random.default_rng(seed)
    block = max(1, min(n, (1 << 22) // max(num_rows, 1)))  # ~16 MiB of float32 weights at a time
    for start in range(0, n, block):
        size = min(block, n - start)
        weights = np.empty((size, num_rows), dtype=np.float32)
        for i in range(size):
            weights[i] = np.bincount(rng.integers(0, num_rows, size=num_rows), minlength=num_rows)
        yield weights
