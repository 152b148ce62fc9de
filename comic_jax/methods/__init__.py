"""Methods: each module registers its `MethodSpec` (see `registry`) when imported here."""
from comic_jax.methods import registry
from comic_jax.methods import baselines, lws, comic, comic_plus  # noqa: F401  (registration, in table order)
from comic_jax.methods.registry import create_method, get, names

__all__ = ['registry', 'create_method', 'get', 'names']
