"""The coefficients of the sampler's activation φ̃ (ddm_numba/_jit.py, ``phi_em``).

    python docs/phi_rational.py        # prints the coefficients and the maximum error

tanh(x) ≈ x P(s) / Q(s), s = x², P(0) = Q(0) = 1, P and Q of degree 3 in s, x clamped to ±7.
Fitted on [0, 7] by iteratively reweighted linear least squares (Sanathanan–Koerner: the
rational's residual x P − tanh·Q divided by the last Q, so the linear problem approaches the
nonlinear one; then Lawson's reweighting, w ← w |error|^0.7, which moves the least-squares fit
towards the minimax one). The coefficients are solved in the variable t = s / 7² (well scaled),
then written for s. The maximum error over [0, 40], with the clamp, is 1.03e-6 (tanh(7) is
1 − 1.7e-6; the fit's value at 7 is 1 − 6.4e-7, so the clamp costs less than the fit). Degree 3
(a [7/6] rational) because the sampler's cost is dominated by φ̃ and this accuracy is far below
Euler–Maruyama's bias (ddm_numba/_jit.py); degree 4 with clamp 9 gives 2e-8, degree 5 with
clamp 11 (the sampler's φ̃ until 2026-12-02) 4.0e-10. Deterministic: tests/test_jit.py refits and
compares with the coefficients in _jit.py.
"""
import numpy as np
from numpy.polynomial import polynomial as Pn

CLAMP = 7.0
DEGREE = 3


def fit(degree=DEGREE, clamp=CLAMP, iterations=300, points=60001):
    """(p, q, max error) with p, q the coefficients of P and Q in s, lowest first (p[0] = q[0] = 1)."""
    x = np.linspace(0.0, clamp, points)
    f = np.tanh(x)
    t = (x / clamp) ** 2
    TP = np.column_stack([t ** k for k in range(1, degree + 1)])
    TQ = np.column_stack([t ** k for k in range(1, degree + 1)])
    w, Q_last, best = np.ones_like(x), np.ones_like(x), None
    for it in range(iterations):
        # x (1 + Σ p_k t^k) − f (1 + Σ q_k t^k) = 0  →  x Σ p_k t^k − f Σ q_k t^k = f − x
        scale = np.sqrt(w) / np.abs(Q_last)
        design = np.column_stack([x[:, None] * TP, -f[:, None] * TQ]) * scale[:, None]
        coef = np.linalg.lstsq(design, (f - x) * scale, rcond=None)[0]
        pt, qt = np.r_[1.0, coef[:degree]], np.r_[1.0, coef[degree:]]
        Q_last = Pn.polyval(t, qt)
        err = x * Pn.polyval(t, pt) / Q_last - f
        if best is None or np.abs(err).max() < best[0]:
            best = (np.abs(err).max(), pt, qt)
        if it > 3:
            w = w * np.abs(err) ** 0.7 + 1e-300
            w /= w.max()
    _, pt, qt = best
    powers = clamp ** (2 * np.arange(degree + 1))
    p, q = pt / powers, qt / powers
    grid = np.linspace(0.0, 40.0, 4_000_001)
    y = np.minimum(grid, clamp)
    approx = y * Pn.polyval(y * y, p) / Pn.polyval(y * y, q)
    return p, q, float(np.abs(approx - np.tanh(grid)).max())


if __name__ == "__main__":
    p, q, err = fit()
    print("P:", ", ".join(repr(float(v)) for v in p[1:]))
    print("Q:", ", ".join(repr(float(v)) for v in q[1:]))
    print(f"max |phi_em - tanh| on [0, 40]: {err:.3g}")
