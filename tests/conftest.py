"""Test configuration: CPU only, small shapes, nothing downloads."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
