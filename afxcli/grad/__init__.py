"""How gradients cross an effect chain (DESIGN.md §3): autodiff through torch twins, SPSA and
finite differences through black-box renders (stateful per-item instances, DeepAFx §2.2-2.3), and
the neural-proxy strategies (``afxcli.grad.proxy``, loaded on use). Entry point:
:func:`make_chain_fn`."""
from .blackbox import BlackBoxLayer, StatelessRenderer  # noqa: F401
from .fd import FDFunction, fd_gradient, fd_render  # noqa: F401
from .spsa import EpsilonSchedule, SPSAFunction, spsa_estimates, spsa_render  # noqa: F401
from .strategy import STRATEGIES, ChainFn, make_chain_fn  # noqa: F401
