"""Analysis of targets and networks (docs/model.md §9, docs/irreversibility.md).

Sub-modules:
    linear          Ornstein–Uhlenbeck closed forms: Lyapunov covariance, Onsager matrix, e_p
    fokker_planck   stationary Fokker–Planck on a grid (d ≤ 2), currents, e_p, refinement
    estimators      e_p from samples and trajectories (ensemble, Stratonovich, AR(1), lagged C)
    dynamics        fixed points, their stability, largest Lyapunov exponent
    connectivity    W = W_s + W_a, spectra, decoder alignment, network fields
    fields          the latent-SDE view: target and network "sides", the parts W_s, W_a
    report          `ddm analyze`: everything above for a model and its target, figures, JSON
    render          the report's JSON-able form and its text table
"""
