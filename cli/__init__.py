"""The ``ddm`` command line (installed as the package ``ddm_numba_cli``)."""
