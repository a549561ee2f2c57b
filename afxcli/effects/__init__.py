"""Effects: one module per family; importing this package registers them all in ``REGISTRY``."""
from .base import REGISTRY, Effect, Renderer, expand_blocks, make_renderer, register  # noqa: F401
from . import gain, eq, dynamics, clipper, multiband, plugin  # noqa: F401,E402


def create(kind: str, sample_rate: float, **options) -> Effect:
    """Build a registered effect by kind (the ``type`` of a chain spec)."""
    from ..errors import AfxError

    if kind not in REGISTRY:
        raise AfxError(f"unknown effect type {kind!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[kind](sample_rate, **options)
