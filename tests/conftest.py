"""Suite-wide fixtures."""
import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def _collect_plugins_per_module():
    """Destroy a module's VST3 plugin instances before the next module starts: the DPF plugins
    print "DPF warning: ..." on stderr from their destructors, which would otherwise land in
    whichever later test happens to trigger garbage collection (and trip its stderr checks)."""
    yield
    gc.collect()
