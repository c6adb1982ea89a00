"""WiSE-FT: move the fine-tuned weights part of the way back to the LP-FT start (pure numpy).

Wortsman et al. 2022: the weights `(1 - alpha) * start + alpha * final` between the
fine-tuning's start (pretrained backbone + linear-probe head) and its end are often better
than either end. Measured for this recipe in docs/benchmarks.md (issue 14): a fixed
alpha = 0.75 beat the plain fine-tuned weights (alpha = 1) in every training measured,
while choosing alpha on a validation split of 76-100 images did not (its noise is larger
than the differences it has to pick between), so the default is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def interpolate(
    start: Sequence[np.ndarray], final: Sequence[np.ndarray], alpha: float
) -> list[np.ndarray]:
    """`(1 - alpha) * start + alpha * final`, array by array, in each array's dtype."""
    if len(start) != len(final):
        raise ValueError(f"start has {len(start)} weight arrays, final has {len(final)}")
    mixed = []
    for a, b in zip(start, final, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"weight shapes differ: {a.shape} vs {b.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            mixed.append(np.array(b))  # counters (e.g. seed state) are not interpolated
            continue
        mixed.append(((1.0 - alpha) * a + alpha * b).astype(a.dtype))
    return mixed
