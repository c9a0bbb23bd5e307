"""The training toolbox shared by ``fit`` (a known system, ddm_numba.matching) and ``fit_data``
(observed trajectories, ddm_numba.learn): parameter packing, the one ridge solver, the block
scaling for L-BFGS-B, the diffusion objective, and L-BFGS-B itself with progress lines.

Objectives follow scipy.optimize's convention (docs/model.md §5): a pure function of one flat
float64 vector that returns (loss, gradient).
"""
import math
import time

import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import threadpool_limits

from . import interrupt
from .backends import cpu
from .errors import DDMError
from .threads import Governor


class Packer:
    """Named arrays <-> one flat float64 vector (in the order given)."""

    def __init__(self, shapes):
        self.shapes = dict(shapes)
        self.slices = {}
        start = 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start

    def pack(self, arrays):
        flat = np.empty(self.size)
        for name, sl in self.slices.items():
            flat[sl] = np.asarray(arrays[name], dtype=float).ravel()
        return flat

    def unpack(self, flat):
        return {name: flat[sl].reshape(self.shapes[name]) for name, sl in self.slices.items()}


# -- ridge regression from Gram statistics ---------------------------------------------------------

RIDGE_FLOOR = 1e-12
"""The floor policy of every ridge solve: RIDGE_FLOOR · tr(G)/n is added to the whole diagonal of
the n×n Gram matrix G, penalized unknowns and unpenalized ones (the bias) alike. It is far below
any penalty a caller chooses (relative 1e-12 of the mean eigenvalue: a change in the solution of
that relative order where G is well conditioned) and keeps the Cholesky solve well posed when the
penalty is 0 and tanh features are nearly collinear. A caller that wants real regularization
passes it as ``penalty``, never by raising the floor."""


def ridge_solve(G, C, penalty=None):
    """X = (G + diag(penalty) + RIDGE_FLOOR · tr(G)/n · I)⁻¹ C, the normal equations of ridge.

    G (n, n): Gram matrix (1/K) Σ ψψᵀ (symmetric positive semi-definite); C (n,) or (n, q):
    (1/K) Σ ψ yᵀ. penalty: None (0), (n,) shared by every column of C, or (q, n), one diagonal
    per column (e.g. penalties weighted per output). Returns X shaped like C.

    Each column minimizes (1/K) Σ_k (xᵀψ_k − y_k)² + Σ_i penalty_i x_i² (up to the floor), whose
    gradient 2 (G x − C) + 2 diag(penalty) x = 0 gives the equation solved.
    """
    G = np.asarray(G, dtype=float)
    C = np.asarray(C, dtype=float)
    n = G.shape[0]
    if G.shape != (n, n) or C.shape[0] != n:
        raise DDMError(f"ridge_solve: G must be (n, n) and C (n, ...); got {G.shape}, {C.shape}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(C))):
        raise DDMError("ridge_solve: the Gram statistics are not finite (overflowing features "
                       "or targets): rescale the data")
    floor = RIDGE_FLOOR * np.trace(G) / n
    try:
        if penalty is None or np.ndim(penalty) == 1:
            diag = floor if penalty is None else np.asarray(penalty, dtype=float) + floor
            return scipy.linalg.solve(G + np.diag(np.broadcast_to(diag, (n,))), C,
                                      assume_a="pos")
        penalty = np.asarray(penalty, dtype=float)
        cols = C.reshape(n, -1)
        if penalty.shape != (cols.shape[1], n):
            raise DDMError(f"ridge_solve: penalty must be (n,) or (q, n) = ({cols.shape[1]}, "
                           f"{n}); got {penalty.shape}")
        out = np.empty_like(cols)
        for a in range(cols.shape[1]):
            out[:, a] = scipy.linalg.solve(G + np.diag(penalty[a] + floor), cols[:, a],
                                           assume_a="pos")
        return out.reshape(C.shape)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        raise DDMError("ridge_solve: the Gram matrix is singular (features that do not vary "
                       "over the data); use fewer neurons or more data") from None


def ridge_path_error(X, Gv, Cv, sv):
    """Held-out mean squared error of linear predictions xᵀψ, per column, from Gram statistics of
    the held-out set alone: mean((xᵀψ − y)²) = xᵀ G_v x − 2 xᵀ C_v + mean(y²). X (n, q); Gv (n, n);
    Cv (n, q); sv (q,) = mean(y²). Returns (q,). Candidates of a ridge path are scored this way
    without touching the held-out samples again."""
    X = np.asarray(X, dtype=float).reshape(Gv.shape[0], -1)
    Cv = np.asarray(Cv, dtype=float).reshape(Gv.shape[0], -1)
    return np.einsum("iq,ij,jq->q", X, Gv, X) - 2.0 * np.einsum("iq,iq->q", X, Cv) + sv


# -- block scaling -------------------------------------------------------------------------------

def lowrank_scale(packer, A, M, B_z=None):
    """Per-entry scale of the flat low-rank vector (A, b_z, [B_z], [M, c]) for L-BFGS-B, which is
    not scale invariant: the optimizer works on x / scale, each block O(1). A and b_z share the
    spread of A (at least 1e-3), B_z its own, M the spread of each of its columns, c 1."""
    N, d = M.shape
    sA = max(float(np.abs(A).std()), 1e-3)
    blocks = {"A": np.full((d, N), sA), "b_z": np.full(d, sA), "M": np.tile(
        np.abs(M).std(axis=0), (N, 1)), "c": np.full(N, 1.0)}
    if "B_z" in packer.shapes:
        p = packer.shapes["B_z"][1]
        blocks["B_z"] = np.full((d, p), max(float(np.abs(B_z).std()), 1e-3) if p else 1.0)
    return packer.pack(blocks)


# -- diffusion --------------------------------------------------------------------------------------

def diffusion_loss_grad(theta, packer, z, Dt, M, c, D_private, reg_R):
    """L_g of docs/model.md §4 (+ λ_R ‖R‖²) and its gradient in (S0, R), flat."""
    prm = packer.unpack(theta)
    loss, gS0, gR = cpu.diffusion_loss_grad(z, Dt, np.ascontiguousarray(prm["S0"]),
                                            np.ascontiguousarray(prm["R"]),
                                            np.ascontiguousarray(M.T), np.ascontiguousarray(c),
                                            np.ascontiguousarray(D_private))
    loss += reg_R * float(np.sum(prm["R"] ** 2))
    return loss, packer.pack({"S0": gS0, "R": gR + 2.0 * reg_R * prm["R"]})


def diffusion_objective(packer, z, Dt, M, c, D_private, reg_R):
    """The diffusion loss divided by mean ‖D_target‖²_F (so that L-BFGS-B's tolerances mean the
    same for any scale of D), as an objective of the flat (S0, R) vector."""
    z = np.ascontiguousarray(z)
    Dt = np.ascontiguousarray(Dt)
    scale_D = 1.0 / max(float(np.mean(np.sum(Dt ** 2, axis=(1, 2)))), 1e-300)

    def objective(x):
        loss, grad = diffusion_loss_grad(x, packer, z, Dt, M, c, D_private, reg_R)
        return loss * scale_D, grad * scale_D

    return objective


# -- L-BFGS-B -----------------------------------------------------------------------------------------

class _Progress:
    """Callback for L-BFGS-B: prints iteration, loss and time to a stream every few seconds."""

    def __init__(self, stage, stream, every_s=2.0, rtol=0.0, window=10):
        self.stage, self.stream, self.every_s = stage, stream, every_s
        self.t0 = time.perf_counter()
        self.last = -1e9
        self.it = 0
        self.loss = float("nan")
        self.rtol, self.window = rtol, window
        self.history = []
        self.converged = False

    def __call__(self, intermediate_result):
        self.it += 1
        self.loss = float(intermediate_result.fun)
        now = time.perf_counter()
        if self.stream is not None and now - self.last >= self.every_s:
            self.last = now
            print(f"  [{self.stage}] iter {self.it:5d}  loss {self.loss:.4e}  "
                  f"{now - self.t0:6.1f}s", file=self.stream, flush=True)
        # A relative stopping rule. scipy's ftol tests (f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1)
        # — absolute below a loss of 1, and our losses are O(e_f²) ≪ 1, so a fixed ftol stops
        # a fit of loss 1e-8 early and one of loss 1 never. Stop instead when the loss fell by
        # less than rtol per iteration, relative to itself, over the last `window` iterations.
        self.history.append(self.loss)
        if self.rtol > 0 and len(self.history) > self.window:
            old = self.history[-1 - self.window]
            if old - self.loss <= self.rtol * self.window * abs(self.loss):
                self.converged = True
                raise StopIteration


def _minimize(fun, x0, stage, max_iter, tol, progress, bounds=None, blas_threads=1,
              snapshot=None, checkpoint=None):
    """L-BFGS-B with progress lines. ``blas_threads=1`` while numba kernels do the work: idle
    OpenBLAS threads spin-wait after each BLAS call inside L-BFGS-B and steal the cores from
    numba's threads (measured: 97 ms against 33 ms an evaluation for lorenz, N = 512, 2 cores).

    Each evaluation runs with the numba thread count a threads.Governor finds fastest under the
    machine's current load (the result does not depend on it).

    Between evaluations a pending Ctrl-C/SIGTERM stops the optimization (interrupt.Interrupted);
    the best point evaluated so far goes to ``checkpoint`` (checkpoint.Checkpointer) as the
    arrays ``snapshot(x)`` — periodically, and at once when interrupted.
    """
    cb = _Progress(stage, progress, rtol=tol)
    t0 = time.perf_counter()
    best = [math.inf, np.array(x0, dtype=float)]
    governor = Governor()     # the numba thread count that the load allows (threads.py)

    def tracked(x):
        interrupt.check(stage)
        loss, grad = governor.run(fun, x)
        if loss < best[0]:
            best[0], best[1] = float(loss), np.array(x)
            if checkpoint is not None:
                checkpoint.save(stage, snapshot(best[1]), best[0], cb.it)
        return loss, grad

    try:
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            res = scipy.optimize.minimize(tracked, x0, jac=True, method="L-BFGS-B",
                                          bounds=bounds, callback=cb,
                                          options={"maxiter": int(max_iter), "ftol": 0.0,
                                                   "gtol": 0.0, "maxcor": 20})
    except interrupt.Interrupted as exc:
        exc.where = (f"the {stage} stage at iteration {cb.it}" +
                     (f" (best loss {best[0]:.4e})" if math.isfinite(best[0]) else ""))
        if checkpoint is not None and math.isfinite(best[0]):
            checkpoint.save(stage, snapshot(best[1]), best[0], cb.it, force=True)
            exc.partial = checkpoint.path
        raise
    if not np.all(np.isfinite(res.x)):
        raise DDMError(f"{stage}: the optimizer produced non-finite parameters; "
                       "try a smaller --reg or fewer --neurons")
    message = (f"converged: relative decrease below {tol:g} per iteration over the last "
               f"{cb.window}" if cb.converged else str(res.message))
    info = {"iterations": int(res.nit), "evaluations": int(res.nfev), "loss": float(res.fun),
            "seconds": time.perf_counter() - t0, "message": message,
            "threads": governor.summary()}
    if progress is not None:
        print(f"  [{stage}] done: {res.nit} iterations, loss {res.fun:.4e}, "
              f"{info['seconds']:.1f}s ({message})", file=progress, flush=True)
    return res.x, info


