"""Methods: each module registers its `MethodSpec` (see `registry`) when imported here."""
# The modules register their methods in table order when imported: keep this order.
# isort: off
from comic_jax.methods import registry
from comic_jax.methods import baselines, large_loss, lws, comic, comic_plus  # noqa: F401
# isort: on
from comic_jax.methods.registry import create_method, get, names

__all__ = ['registry', 'create_method', 'get', 'names']
