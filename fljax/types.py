"""Array and pytree aliases shared across fljax.

Shapes are written in comments as ``float[n, d]`` where ``n`` is the number of
clients in a round and ``d`` the flattened parameter dimension.
"""

from __future__ import annotations

from typing import Annotated, Any, Mapping

import jax

PRNGKey = jax.Array
PyTree = Any
Params = PyTree
Updates = jax.Array  # float[n_clients, dim]: one row per client.
ClientMask = jax.Array  # bool[n_clients]: traced, never a static mask.
Info = Mapping[str, jax.Array]  # diagnostics: scalars or [n_clients] arrays.

# A float argument that fixes shapes or code (a fraction that sets a count): the
# simulator keeps it static. Plain ``float`` arguments are values that may be
# traced (see fljax.registry).
StaticFloat = Annotated[float, "static"]
