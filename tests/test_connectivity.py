"""The network's latent fields, its connectivity decompositions and the comparison metrics."""
import numpy as np
import pytest

from ddm_numba import DDMError, Network
from ddm_numba.analysis.compare import (autocorrelation, cross_correlation_asymmetry,
                                        energy_distance, sliced_wasserstein, well_transitions)
from ddm_numba.analysis.connectivity import (LatentField, asymmetry_lowrank, constant_diffusion,
                                             decoder_alignment, epr_split_ensemble, spectra)


def random_net(N=12, d=2, mode="lowrank", seed=0, tau=0.7):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((N, d))
    c = rng.standard_normal(N) * 0.3
    A = rng.standard_normal((d, N)) / N
    b = M @ rng.standard_normal(d) * 0.2 + c
    S0 = np.diag(rng.uniform(0.5, 1.0, d))
    R = np.zeros((d, d, N))
    if mode == "lowrank":
        return Network(tau, M, c, b, S0, R, A=A)
    W = M @ A + 0.1 * rng.standard_normal((N, N)) / np.sqrt(N)
    return Network(tau, M, c, b, S0, R, W=W)


@pytest.mark.parametrize("mode", ["lowrank", "full"])
def test_latent_field_matches_network_and_its_derivatives(mode):
    net = random_net(mode=mode)
    z = np.random.default_rng(1).standard_normal((7, 2))
    field = LatentField(net)
    assert np.allclose(field.drift(z), net.latent_drift(z), atol=1e-13)
    # Jacobian against central differences; divergence = its trace
    eps = 1e-6
    J_fd = np.stack([(field.drift(z + eps * e) - field.drift(z - eps * e)) / (2 * eps)
                     for e in np.eye(2)], axis=2)
    assert np.max(np.abs(field.jacobian(z) - J_fd)) < 1e-8
    assert np.allclose(field.divergence(z), np.trace(field.jacobian(z), axis1=1, axis2=2))
    # the parts add up: f = f_s + f_a, and each part's drift is P W_k φ (+ leak, bias for W_s)
    fs, fa = LatentField(net, "W_s"), LatentField(net, "W_a")
    assert np.allclose(fs.drift(z) + fa.drift(z), field.drift(z), atol=1e-13)
    W = net.W
    Wa = 0.5 * (W - W.T)
    direct = np.tanh(net.embed(z)) @ (net.P @ Wa).T / net.tau
    assert np.allclose(fa.drift(z), direct, atol=1e-13)
    assert np.allclose(fs.divergence(z) + fa.divergence(z), field.divergence(z))


def test_lowrank_asymmetry_equals_the_dense_computation():
    net = random_net(N=30, d=3)
    W = net.W
    Wa, Ws = 0.5 * (W - W.T), 0.5 * (W + W.T)
    got = asymmetry_lowrank(net.M, net.A)
    assert got["a"] == pytest.approx(np.linalg.norm(Wa) / np.linalg.norm(W), rel=1e-12)
    assert got["eta"] == pytest.approx(np.trace(W @ W) / np.linalg.norm(W) ** 2, rel=1e-10)
    assert got["norm_W_s"] == pytest.approx(np.linalg.norm(Ws), rel=1e-12)
    assert got["a"] ** 2 == pytest.approx((1 - got["eta"]) / 2, rel=1e-12)
    # a symmetric low-rank W = M K Mᵀ has a = 0
    K = np.array([[1.0, 0.3, 0], [0.3, 2.0, 0.1], [0, 0.1, -0.5]])
    assert asymmetry_lowrank(net.M, K @ net.M.T)["a"] < 1e-7


def test_spectra_of_lowrank_w_are_those_of_a_m():
    net = random_net(N=20, d=3)
    sp = spectra(net)
    dense = np.linalg.eigvals(net.W)
    top = dense[np.argsort(-np.abs(dense))][:3]
    assert np.allclose(np.sort_complex(top), np.sort_complex(sp["eig_W"]), atol=1e-10)
    assert sp["rank"] == 3
    assert np.allclose(sp["singular_values"], np.linalg.svd(net.W, compute_uv=False)[:3])


def test_aligned_decoders_score_one_and_reversible_ensemble_split():
    """a_i = κ_i D m_i makes every rank-one term D⁻¹ a_i m_iᵀ symmetric
    (docs/irreversibility.md §5.4): alignment 1, although W = M A is asymmetric."""
    rng = np.random.default_rng(3)
    N, d = 10, 2
    M = rng.standard_normal((N, d))
    S0 = np.array([[0.8, 0.0], [0.3, 0.6]])
    D = S0 @ S0.T
    kappa = rng.uniform(-1, 1, N) * 0.2
    A = (D @ M.T) * kappa
    net = Network(1.0, M, np.zeros(N), np.zeros(N), S0, np.zeros((d, d, N)), A=A)
    assert np.allclose(constant_diffusion(net), D)
    al = decoder_alignment(net, D)
    assert al["weighted_abs_cos"] == pytest.approx(1.0, abs=1e-12)
    assert al["misalignment"] < 1e-7
    assert asymmetry_lowrank(M, A)["a"] > 0.1
    rand = Network(1.0, M, np.zeros(N), np.zeros(N), S0, np.zeros((d, d, N)),
                   A=rng.standard_normal((d, N)) * 0.2)
    assert decoder_alignment(rand, D)["weighted_abs_cos"] < 0.9


def test_epr_split_parts_sum_to_total():
    net = random_net(N=16, d=2)
    z = np.random.default_rng(5).standard_normal((4, 50, 2))
    split = epr_split_ensemble(net, z, constant_diffusion(net))
    total = split["total"][0]
    assert split["symmetric"][0] + split["antisymmetric"][0] == pytest.approx(total, rel=1e-10)


def test_bad_part_and_points_are_refused():
    net = random_net()
    with pytest.raises(DDMError, match="part"):
        LatentField(net, "sym")
    with pytest.raises(DDMError, match="shape"):
        LatentField(net).drift(np.zeros((3, 5)))


def test_distances_separate_different_laws_and_not_equal_ones():
    """Two samples of N(0, I) vs a sample of N(0.5, I): with 4000 points per side the sampling
    scale of the sliced W1 is about 1/sqrt(4000) ≈ 0.016, the shift's about 0.5·E|θ₁| ≈ 0.3."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 4000, 2))
    shifted = y + np.array([0.5, 0.0])
    assert sliced_wasserstein(x, y) < 0.05 < 0.2 < sliced_wasserstein(x, shifted)
    assert energy_distance(x, y) < 0.01 < 0.05 < energy_distance(x, shifted)


def test_autocorrelation_of_ar1_and_rotation_asymmetry():
    """AR(1) z' = ρ z + noise has ACF ρ^k; the rotation OU has C12 − C21 of the sign of its
    rotation (counter-clockwise for B = I − J: current along +J z)."""
    rng = np.random.default_rng(1)
    trials, T, rho = 50, 2000, 0.8
    z = np.zeros((trials, T, 1))
    z[:, 0, 0] = rng.standard_normal(trials) / np.sqrt(1 - rho ** 2)
    for k in range(1, T):
        z[:, k, 0] = rho * z[:, k - 1, 0] + rng.standard_normal(trials)
    acf = autocorrelation(z, 5)[:, 0]
    # standard error of each ρ̂(k) ~ sqrt((1 + ρ²)/(1 − ρ²)) / sqrt(trials T) ≈ 0.004
    assert np.allclose(acf, rho ** np.arange(6), atol=0.02)
    # counter-clockwise rotation: dz = (−z + ω J z) dt + dB, J = [[0, −1], [1, 0]]
    dt, omega = 0.01, 2.0
    B = np.array([[1.0, omega], [-omega, 1.0]])
    z2 = np.zeros((40, 3000, 2))
    for k in range(1, 3000):
        z2[:, k] = z2[:, k - 1] - dt * z2[:, k - 1] @ B.T + np.sqrt(dt) * rng.standard_normal((40, 2))
    asym = cross_correlation_asymmetry(z2[:, 500::10], 10)
    # C12(τ) − C21(τ) = −2 e^{−τ} sin(ωτ) · S11 / S11 < 0 for small τ > 0 with ω > 0
    assert asym[0] == pytest.approx(0.0, abs=1e-12) and np.all(asym[1:5] < -0.1)


def test_well_transitions_count_hops_and_dwell_times():
    wells = np.array([[-1.0], [1.0]])
    # one trial: starts in well 0 (dwell not complete), goes to 1 at k=10, back to 0 at k=30
    row = np.concatenate([np.full(10, -1.0), np.full(20, 1.0), np.full(15, -1.0)])
    row[10:13] = 0.0  # in between: no core, assignment stays with well 0
    z = row[None, :, None]
    out = well_transitions(z, wells, radius=0.3, dt=0.5)
    assert out["counts"].tolist() == [[0, 1], [1, 0]]
    assert np.isnan(out["mean_dwell"][0])
    assert out["mean_dwell"][1] == pytest.approx((30 - 13) * 0.5)
    assert out["mfpt"][1, 0] == pytest.approx((30 - 13) * 0.5)
