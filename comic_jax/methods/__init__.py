"""Methods: each module registers its `MethodSpec` (see `registry`) when imported here."""
# The modules register their methods in table order when imported: keep this order.
# isort: off
from comic_jax.methods import registry
from comic_jax.methods import baselines, lws, comic, comic_plus  # noqa: F401  (registration)
# isort: on
from comic_jax.methods.registry import create_method, get, names

__all__ = ['registry', 'create_method', 'get', 'names']
