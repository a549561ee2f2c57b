"""BLAS threads for afx's small matrix products (no heavy imports).

Every matrix product on the ``afx master`` path is small: per-chunk block recursions of the
K-weighting (:class:`afxcli.filters.BlockIIR`, 16×16 matrices), the mel product over 4096 frames,
the controller on ~180 frames. OpenBLAS's worker threads only add synchronization there, and on a
shared machine they are ruinous (measured at a load average of ~3.8 on 2 cores: a
``(8192, 16) @ (16, 16)`` float64 product took 7 ms with OpenBLAS's default threads and 0.6 ms with
one; a whole 180 s master 4.6 s vs 4.0 s wall). :func:`one_blas_thread` limits numpy's BLAS to the
calling thread's own work for a block of code (``threadpoolctl``; a no-op when it is missing).
The limit is process-wide while the block runs (BLAS has no per-thread setting).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS limited to one thread; the previous limits come back after it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
