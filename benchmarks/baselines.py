"""Baselines for the benchmarks: ddm_numba's computations written "the way a user would".

Each is a plain function in numpy, PyTorch, JAX (and torchsde for sampling), computing exactly
what ddm_numba computes, so the benchmarks can check the numbers agree before timing anything:

  * low-rank drift loss + gradient      (ddm_numba: matching.lowrank_loss_grad, p = 0 inputs)
  * full-mode drift loss + gradient     (ddm_numba: matching.FullGram.loss_grad, fixed embedding)
  * Euler–Maruyama sampling of the net  (ddm_numba: simulate.sample_network / cpu.simulate_network)

Conventions. float64 everywhere (JAX's x64 mode is switched on when a JAX baseline first runs).
Loss functions take the framework's own arrays for data and parameters — made once, outside the
timed call, with ``as_torch`` / ``as_jax`` (a user of that framework keeps them so) — and return
``(loss as float, {name: gradient as numpy array})`` with ddm_numba's packer names and shapes:
"A" (d, N), "b_z" (d,), "M" (N, d), "c" (N,) for low-rank; "W" (N, N), "b" (N,) for full.
Samplers take a dict of network arrays (``network_arrays``), x0 (trials, N) and the step count,
and return the recorded latent paths z (trials, T, d) as numpy, T = n_steps // every + 1.

Importing this module imports no framework and changes no thread count: PyTorch, JAX and
torchsde are imported by the functions that use them (a script can show its --help, or run its
numpy baselines, without them); the scripts call ``limit_threads`` first. The timing helpers
are in _harness.py.
"""
import functools
import importlib
import os

import numpy as np

import _harness


def _torch():
    import torch
    return torch


def _jax():
    """jax and jax.numpy, with float64 arrays (x64 mode, switched on before any JAX array)."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    return jax, jnp


# -- conversions ------------------------------------------------------------------------------

def as_torch(arrays, requires_grad=()):
    """Dict of numpy arrays -> dict of float64 torch tensors (zero-copy where possible).

    Names in ``requires_grad`` become leaf tensors that record gradients (the parameters).
    Scalars (floats) pass through unchanged.
    """
    torch = _torch()
    out = {}
    for name, value in arrays.items():
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
            if name in requires_grad:
                t = t.clone().requires_grad_(True)  # own storage: never aliases the caller's array
            out[name] = t
        else:
            out[name] = value
    return out


def as_jax(arrays):
    """Dict of numpy arrays -> dict of float64 JAX arrays (copied to the device once)."""
    _, jnp = _jax()
    return {name: jnp.asarray(value, dtype=jnp.float64) if isinstance(value, np.ndarray)
            else value for name, value in arrays.items()}


# -- (a) low-rank drift loss and gradient -----------------------------------------------------
#
# Samples z (K, d), target drift f (K, d), weights λ (d,), time constant τ; parameters
# A (d, N), b_z (d,), M (N, d), c (N,):
#     φ_k    = tanh(M z_k + c)                       (N,)
#     fnet_k = (−z_k + A φ_k + b_z) / τ              (d,)
#     r_k    = fnet_k − f_k
#     L      = (1/K) Σ_k Σ_a λ_a r_ka²  +  reg_A ‖A‖²_F
# Backward pass (hand-written in the numpy version): with e_k = (2/(K τ)) λ ⊙ r_k = ∂L/∂(A φ_k),
#     ∂L/∂A = Σ_k e_k φ_kᵀ + 2 reg_A A          ∂L/∂b_z = Σ_k e_k
#     δ_k   = (Aᵀ e_k) ⊙ (1 − φ_k²)  (= ∂L/∂h_k, h = M z + c, tanh' = 1 − tanh²)
#     ∂L/∂M = Σ_k δ_k z_kᵀ                      ∂L/∂c   = Σ_k δ_k

def lowrank_numpy(data, prm, reg_A, chunk=2048):
    """Low-rank loss and gradient in numpy, ``chunk`` samples at a time.

    data: {"z", "f", "lam", "tau"}; prm: {"A", "b_z", "M", "c"} (numpy). Chunking keeps the
    chunk×N temporaries (h, φ, δ) small instead of materializing K×N of each; every product is
    a BLAS call over the chunk.
    """
    z, f, lam, tau = data["z"], data["f"], data["lam"], data["tau"]
    A, bz, M, c = prm["A"], prm["b_z"], prm["M"], prm["c"]
    K = len(z)
    loss = 0.0
    gA = np.zeros_like(A)
    gbz = np.zeros_like(bz)
    gM = np.zeros_like(M)
    gc = np.zeros_like(c)
    for s in range(0, K, chunk):
        zc, fc = z[s:s + chunk], f[s:s + chunk]
        ph = np.tanh(zc @ M.T + c)                       # (n, N)
        r = (ph @ A.T + bz - zc) / tau - fc              # (n, d)
        loss += float(np.sum(lam * r * r))
        e = (2.0 / (K * tau)) * lam * r                  # ∂L/∂(A φ)
        gA += e.T @ ph
        gbz += e.sum(axis=0)
        delta = (e @ A) * (1.0 - ph * ph)                # ∂L/∂h
        gM += delta.T @ zc
        gc += delta.sum(axis=0)
    loss = loss / K + reg_A * float(np.sum(A * A))
    gA += 2.0 * reg_A * A
    return loss, {"A": gA, "b_z": gbz, "M": gM, "c": gc}


def _lowrank_loss(xp, z, f, lam, tau, A, bz, M, c, reg_A):
    """The low-rank loss, written once for torch and jax.numpy (``xp`` is the module)."""
    ph = xp.tanh(z @ M.T + c)
    r = (-z + ph @ A.T + bz) / tau - f
    return xp.mean(xp.sum(lam * r * r, axis=1)) + reg_A * xp.sum(A * A)


def lowrank_torch(data, prm, reg_A):
    """Low-rank loss and gradient with PyTorch autograd.

    data: as_torch({"z", "f", "lam", "tau"}); prm: as_torch({...}, requires_grad=all four).
    One call = zero the gradients (set to None, torch's zero_grad default), forward, backward.
    """
    for p in prm.values():
        p.grad = None
    loss = _lowrank_loss(_torch(), data["z"], data["f"], data["lam"], data["tau"],
                         prm["A"], prm["b_z"], prm["M"], prm["c"], reg_A)
    loss.backward()
    return loss.item(), {name: prm[name].grad.numpy() for name in ("A", "b_z", "M", "c")}


def _lowrank_loss_jax(prm, z, f, lam, tau, reg_A):
    _, jnp = _jax()
    return _lowrank_loss(jnp, z, f, lam, tau, prm["A"], prm["b_z"], prm["M"], prm["c"], reg_A)


@functools.cache
def _lowrank_value_and_grad_jax():
    jax, _ = _jax()
    return jax.jit(jax.value_and_grad(_lowrank_loss_jax))


def lowrank_jax(data, prm, reg_A):
    """Low-rank loss and gradient with ``jax.jit(jax.value_and_grad(loss))``.

    data, prm: as_jax(...). The first call for a shape traces and compiles (XLA).
    """
    loss, grads = _lowrank_value_and_grad_jax()(prm, data["z"], data["f"], data["lam"],
                                              data["tau"], reg_A)
    loss = loss.block_until_ready()
    return float(loss), {name: np.asarray(g.block_until_ready()) for name, g in grads.items()}


# -- (b) full-mode drift loss and gradient, fixed embedding -----------------------------------
#
# The embedding M, c is fixed, so H = Z Mᵀ + c (K, N) and Φ = tanh(H) are constants: precompute
# them once (``full_features``). With W (N, N), b (N,), P = (MᵀM)⁻¹Mᵀ (d, N), Q = I − M P:
#     F_k  = (−h_k + W φ_k + b) / τ                   (the full network drift at x = h_k)
#     r_k  = P F_k − f_k,     F⊥_k = Q F_k           (on-manifold error, off-manifold drift)
#     L    = (1/K) Σ_k [ Σ_a λ_a r_ka² + λ⊥ ‖F⊥_k‖² ]  +  reg_W ‖W‖²_F
# (matching.FullGram evaluates the same L from Gram statistics; τ divides F, so its τ² L form
# is this L.) Backward pass (numpy version): Q is a symmetric idempotent projector, so
# ∂‖Q F‖²/∂F = 2 Qᵀ Q F = 2 F⊥, and with g_k = ∂L/∂F_k = (2/K) [ Pᵀ (λ ⊙ r_k) + λ⊥ F⊥_k ]:
#     ∂L/∂W = (1/τ) Σ_k g_k φ_kᵀ + 2 reg_W W,     ∂L/∂b = (1/τ) Σ_k g_k.
# Cost O(K N²) per evaluation: three K×N×N products (Φ Wᵀ, F Qᵀ, gᵀ Φ); autograd adds a fourth
# (it back-propagates through F Qᵀ instead of using Q's idempotence).

def full_features(z, M, c):
    """H = z Mᵀ + c and Φ = tanh(H), both (K, N): the fixed embedding's features."""
    H = z @ M.T + c
    return H, np.tanh(H)


def full_numpy(data, prm, reg_W, chunk=2048):
    """Full-mode loss and gradient in numpy, ``chunk`` samples at a time (hand-written backward).

    data: {"H", "Phi", "f", "lam", "P", "Q", "tau", "lam_perp"}; prm: {"W", "b"} (numpy).
    """
    H, Phi, f, lam = data["H"], data["Phi"], data["f"], data["lam"]
    P, Q, tau, lam_perp = data["P"], data["Q"], data["tau"], data["lam_perp"]
    W, b = prm["W"], prm["b"]
    K = len(H)
    loss = 0.0
    gW = np.zeros_like(W)
    gb = np.zeros_like(b)
    for s in range(0, K, chunk):
        Ph = Phi[s:s + chunk]
        F = (Ph @ W.T - H[s:s + chunk] + b) / tau        # (n, N)
        r = F @ P.T - f[s:s + chunk]                     # (n, d)
        Fp = F @ Q.T                                     # (n, N)
        loss += float(np.sum(lam * r * r)) + lam_perp * float(np.sum(Fp * Fp))
        g = ((lam * r) @ P + lam_perp * Fp) * (2.0 / (K * tau))   # ∂L/∂(τ F)
        gW += g.T @ Ph
        gb += g.sum(axis=0)
    loss = loss / K + reg_W * float(np.sum(W * W))
    gW += 2.0 * reg_W * W
    return loss, {"W": gW, "b": gb}


def _full_loss(xp, H, Phi, f, lam, P, Q, tau, lam_perp, W, b, reg_W):
    """The full-mode loss, written once for torch and jax.numpy."""
    F = (-H + Phi @ W.T + b) / tau
    r = F @ P.T - f
    Fp = F @ Q.T
    per_sample = xp.sum(lam * r * r, axis=1) + lam_perp * xp.sum(Fp * Fp, axis=1)
    return xp.mean(per_sample) + reg_W * xp.sum(W * W)


def full_torch(data, prm, reg_W):
    """Full-mode loss and gradient with PyTorch autograd (zero grads, forward, backward)."""
    for p in prm.values():
        p.grad = None
    d = data
    loss = _full_loss(_torch(), d["H"], d["Phi"], d["f"], d["lam"], d["P"], d["Q"], d["tau"],
                      d["lam_perp"], prm["W"], prm["b"], reg_W)
    loss.backward()
    return loss.item(), {"W": prm["W"].grad.numpy(), "b": prm["b"].grad.numpy()}


def _full_loss_jax(prm, H, Phi, f, lam, P, Q, tau, lam_perp, reg_W):
    _, jnp = _jax()
    return _full_loss(jnp, H, Phi, f, lam, P, Q, tau, lam_perp, prm["W"], prm["b"], reg_W)


@functools.cache
def _full_value_and_grad_jax():
    jax, _ = _jax()
    return jax.jit(jax.value_and_grad(_full_loss_jax))


def full_jax(data, prm, reg_W):
    """Full-mode loss and gradient with ``jax.jit(jax.value_and_grad(loss))``."""
    d = data
    loss, grads = _full_value_and_grad_jax()(prm, d["H"], d["Phi"], d["f"], d["lam"], d["P"],
                                           d["Q"], d["tau"], d["lam_perp"], reg_W)
    loss = loss.block_until_ready()
    return float(loss), {name: np.asarray(g.block_until_ready()) for name, g in grads.items()}


# -- (c) Euler–Maruyama sampling of the network ----------------------------------------------
#
#     x ← x + (dt/τ) (−x + W φ(x) + b) + √dt M S0 ξ,     ξ ~ N(0, I_m),  φ = tanh
# Low-rank: W = M A, so W φ = M (A φ) costs O(N d), and the drift's M-part and the noise share
# one product with M:  x ← x + (dt/τ)(b − x) + M [ (dt/τ) A φ + √dt S0 ξ ].
# Full: W is a dense N×N matrix, O(N²) a step. Record z = P (x − c) at steps 0, every, 2·every,
# ..., n_steps. Every framework draws its own normals, so noisy paths differ from ddm_numba's
# (xoroshiro128+ per trial); with S0 = 0 they are the same deterministic Euler recursion.

def network_arrays(net):
    """The arrays the samplers need, from a ddm_numba Network: low-rank gets A, full gets W."""
    arrays = {"tau": net.tau, "M": net.M, "c": net.c, "b": net.b, "S0": net.S0, "P": net.P}
    if net.mode == "lowrank":
        arrays["A"] = net.A
    else:
        arrays["W"] = net.W
    return arrays


def phi_em_xp(xp, x):
    """ddm_numba's sampling activation φ̃ (``_jit.phi_em``: tanh to 1.1e-6, a [7/6] rational) in
    numpy, PyTorch or jax.numpy (xp): the baselines run it in place of tanh in bench_sampling's
    correctness check, so that the check compares the same recursion to 1e-8."""
    from ddm_numba import _jit
    y = xp.clip(x, -_jit.PHI_EM_CLAMP, _jit.PHI_EM_CLAMP)
    s = y * y
    p, q = 0.0, 0.0
    for cp, cq in zip(reversed(_jit.PHI_EM_P), reversed(_jit.PHI_EM_Q)):   # Horner, as in _jit
        p, q = s * (cp + p), s * (cq + q)
    return y * (1.0 + p) / (1.0 + q)


def em_numpy(net, x0, n_steps, dt, every, seed, exact_phi=True):
    """Euler–Maruyama, vectorized over trials with numpy (one BLAS product per term per step).
    exact_phi=False: ddm_numba's φ̃ in place of tanh (``phi_em_xp``), as in every em_*."""
    rng = np.random.default_rng(seed)
    M, c, b, S0, P, tau = net["M"], net["c"], net["b"], net["S0"], net["P"], net["tau"]
    trials, m = len(x0), S0.shape[1]
    h, sqdt = dt / tau, np.sqrt(dt)
    x = np.array(x0, dtype=float)
    z = np.empty((trials, n_steps // every + 1, M.shape[1]))
    for step in range(n_steps + 1):
        if step % every == 0:
            z[:, step // every] = (x - c) @ P.T
        if step == n_steps:
            break
        ph = np.tanh(x) if exact_phi else phi_em_xp(np, x)
        latent_noise = sqdt * (rng.standard_normal((trials, m)) @ S0.T)   # √dt S0 ξ  (trials, d)
        if "A" in net:
            x = x + h * (b - x) + (h * (ph @ net["A"].T) + latent_noise) @ M.T
        else:
            x = x + h * (ph @ net["W"].T + b - x) + latent_noise @ M.T
    return z


def em_torch(net, x0, n_steps, dt, every, seed, exact_phi=True):
    """Euler–Maruyama in PyTorch (float64, no autograd), the same recursion as em_numpy."""
    torch = _torch()
    t = as_torch({k: v for k, v in net.items() if k != "tau"})
    M, c, b, S0, P, tau = t["M"], t["c"], t["b"], t["S0"], t["P"], net["tau"]
    gen = torch.Generator().manual_seed(int(seed))
    trials, m = len(x0), S0.shape[1]
    h, sqdt = dt / tau, float(np.sqrt(dt))
    with torch.no_grad():
        x = torch.from_numpy(np.array(x0, dtype=float))
        z = torch.empty((trials, n_steps // every + 1, M.shape[1]), dtype=torch.float64)
        for step in range(n_steps + 1):
            if step % every == 0:
                z[:, step // every] = (x - c) @ P.T
            if step == n_steps:
                break
            ph = torch.tanh(x) if exact_phi else phi_em_xp(torch, x)
            xi = torch.randn((trials, m), generator=gen, dtype=torch.float64)
            latent_noise = sqdt * (xi @ S0.T)
            if "A" in t:
                x = x + h * (b - x) + (h * (ph @ t["A"].T) + latent_noise) @ M.T
            else:
                x = x + h * (ph @ t["W"].T + b - x) + latent_noise @ M.T
    return z.numpy()


TORCHSDE_NOISE_TYPE = "additive"     # NetworkSDE.noise_type, known without importing torch


@functools.cache
def _network_sde_class():
    """NetworkSDE, made at its first use (it subclasses torch.nn.Module)."""
    torch = _torch()

    class NetworkSDE(torch.nn.Module):
        """The network as a torchsde SDE:  dx = f(x) dt + G dB,  f = (−x + W φ(x) + b)/τ,
        G = M S0.

        noise_type "additive": G does not depend on x (nor t), which is what "additive" declares;
        torchsde's Euler step is then x + f dt + G ΔB with ΔB ~ N(0, dt I_m) (the "general" type
        gives the same Euler step, and both accept a non-square (N, m) G; "diagonal" and "scalar"
        do not describe M S0). g returns G broadcast over the batch, (trials, N, m), as torchsde wants.
        """

        noise_type = TORCHSDE_NOISE_TYPE
        sde_type = "ito"

        def __init__(self, net, exact_phi=True):
            super().__init__()
            self.exact_phi = exact_phi
            t = as_torch({k: v for k, v in net.items() if k != "tau"})
            self.tau = net["tau"]
            self.M, self.b = t["M"], t["b"]
            self.A, self.W = t.get("A"), t.get("W")
            self.G = t["M"] @ t["S0"]                      # (N, m)

        def f(self, t, x):
            ph = torch.tanh(x) if self.exact_phi else phi_em_xp(torch, x)
            drive = (ph @ self.A.T) @ self.M.T if self.A is not None else ph @ self.W.T
            return (drive + self.b - x) / self.tau

        def g(self, t, x):
            return self.G.expand(x.shape[0], *self.G.shape)

    return NetworkSDE


def __getattr__(name):
    """``baselines.NetworkSDE`` as before, defined when first asked for (it needs torch)."""
    if name == "NetworkSDE":
        return _network_sde_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def em_torchsde(net, x0, n_steps, dt, every, seed, exact_phi=True):
    """Euler–Maruyama with ``torchsde.sdeint(sde, x0, ts, method="euler", dt=dt)``.

    ts = the recording times 0, every·dt, ..., n_steps·dt: sdeint returns x at each (T, trials, N)
    and z = P (x − c) is taken from those. The Brownian motion is torchsde's default kind
    (BrownianInterval over [0, n_steps·dt]), seeded through its ``entropy``.
    """
    torch = _torch()
    import torchsde
    sde = _network_sde_class()(net, exact_phi)
    T = n_steps // every + 1
    ts = torch.arange(T, dtype=torch.float64) * (every * dt)
    x = torch.from_numpy(np.array(x0, dtype=float))
    bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]),
                                   size=(len(x0), net["S0"].shape[1]), dtype=torch.float64,
                                   entropy=int(seed))
    with torch.no_grad():
        xs = torchsde.sdeint(sde, x, ts, bm=bm, method="euler", dt=dt)    # (T, trials, N)
        z = (xs - torch.from_numpy(net["c"])) @ torch.from_numpy(net["P"]).T
    return z.transpose(0, 1).numpy()


def _em_jax_block(x, keys, prm, dt, full, exact_phi):
    """``every`` Euler steps (lax.scan over the per-step keys), then nothing recorded here."""
    jax, jnp = _jax()
    M, b, S0, tau = prm["M"], prm["b"], prm["S0"], prm["tau"]
    h, sqdt = dt / tau, jnp.sqrt(dt)

    def step(x, key):
        ph = jnp.tanh(x) if exact_phi else phi_em_xp(jnp, x)
        xi = jax.random.normal(key, (x.shape[0], S0.shape[1]), dtype=jnp.float64)
        latent_noise = sqdt * (xi @ S0.T)
        if full:
            x = x + h * (ph @ prm["W"].T + b - x) + latent_noise @ M.T
        else:
            x = x + h * (b - x) + (h * (ph @ prm["A"].T) + latent_noise) @ M.T
        return x, None

    x, _ = jax.lax.scan(step, x, keys)
    return x


def _em_jax_impl(prm, x0, key, dt, n_steps, every, full, exact_phi):
    """Outer lax.scan over records (z = P (x − c), then ``every`` steps), inner over steps."""
    jax, jnp = _jax()
    n_rec = n_steps // every
    keys = jax.random.split(key, n_steps).reshape((n_rec, every) + key.shape)

    def record_then_run(x, block_keys):
        z = (x - prm["c"]) @ prm["P"].T
        return _em_jax_block(x, block_keys, prm, dt, full, exact_phi), z

    x, zs = jax.lax.scan(record_then_run, x0, keys)
    z_last = (x - prm["c"]) @ prm["P"].T
    return jnp.concatenate([zs, z_last[None]], axis=0).transpose(1, 0, 2)


@functools.cache
def _em_jax_jit():
    jax, _ = _jax()
    return jax.jit(_em_jax_impl, static_argnames=("n_steps", "every", "full", "exact_phi"))


def em_jax(net, x0, n_steps, dt, every, seed, exact_phi=True):
    """Euler–Maruyama in JAX: ``jax.lax.scan`` over steps inside ``jax.jit``, jax.random normals.

    n_steps, every and the mode are static (they fix the loop shapes): the first call for each
    (shape, n_steps, every, mode) compiles.
    """
    if n_steps % every:
        raise ValueError("em_jax needs n_steps to be a multiple of every")
    jax, jnp = _jax()
    prm = as_jax({k: v for k, v in net.items()})
    z = _em_jax_jit()(prm, jnp.asarray(x0, dtype=jnp.float64), jax.random.key(int(seed)),
                    float(dt), n_steps=int(n_steps), every=int(every), full="W" in net,
                    exact_phi=bool(exact_phi))
    return np.asarray(z.block_until_ready())


# -- shared by bench_training.py and bench_sampling.py ----------------------------------------
# (the framework-free helpers are in _harness.py)

FRAMEWORK_MODULES = ("torch", "jax", "torchsde")


def frameworks():
    """{name: module} of PyTorch, JAX and torchsde, those installed, imported now (JAX with x64)."""
    out = {}
    for name in FRAMEWORK_MODULES:
        try:
            out[name] = importlib.import_module(name)
        except ImportError:
            continue
    if "jax" in out:
        _jax()
    return out


def limit_threads(threads):
    """Use at most ``threads`` threads in numba, torch and BLAS (and JAX when threads = 1).

    Imports the installed frameworks first, so that the BLAS/OpenMP libraries they bring are
    limited too. Call before the first JAX computation: XLA reads XLA_FLAGS when its CPU backend
    starts (importing jax does not start it). XLA has no flag for "n threads" other than 1, so
    with threads > 1 JAX uses its default (one per core). The limits hold for the rest of the
    process (_harness.limit_threads).
    """
    loaded = frameworks()
    threads = _harness.limit_threads(threads)
    if "torch" in loaded:
        loaded["torch"].set_num_threads(threads)


def machine_info(threads):
    """Platform, CPU, library versions and the thread counts in force (for the --json file)."""
    import numba
    loaded = frameworks()
    torch = loaded.get("torch")
    return {
        **_harness.machine_basics(),
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     **{name: getattr(loaded[name], "__version__", "unknown")
                        if name in loaded else "not installed" for name in FRAMEWORK_MODULES}},
        "threads": {"requested": threads, "numba": numba.get_num_threads(),
                    "torch": torch.get_num_threads() if torch is not None else None,
                    "blas/openmp": _harness.blas_threads(),
                    "jax": "XLA default (all cores)" if threads > 1 else "1 (XLA_FLAGS)",
                    "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
    }
