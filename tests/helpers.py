"""Small helpers shared by the tests (strategies live in strategies.py)."""
import numpy as np

import minires as mr


def t64(array, device="cpu", requires_grad=True):
    """A float64 leaf tensor on ``device`` -- what gradcheck wants."""
    return mr.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad,
                     dtype=np.float64, device=device)


def away_from(values, points, margin=1e-3):
    """Push values at least ``margin`` away from each kink in ``points`` (e.g. ReLU at 0)."""
    values = np.array(values, dtype=np.float64)
    for p in points:
        close = np.abs(values - p) < margin
        values[close] = p + np.where(values[close] >= p, margin, -margin) * 2
    return values
