"""`python -m comic_jax.audit`: the label audit's command (comic_jax/cli/audit.py)."""
from comic_jax.cli import audit

audit.run()
