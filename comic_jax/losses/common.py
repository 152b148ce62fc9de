"""What every loss shares: one reduction rule (docs/baselines.md, "Choices and facts worth
knowing", Reduction)."""
import jax.numpy as jnp


def reduce_loss(per_element: jnp.ndarray) -> jnp.ndarray:
  """(B, C) per-element losses -> scalar: sum over classes, mean over samples.

  The original baselines disagree (ASL, Hill, P-ASL sum over batch and classes; DB and BCE average
  over both); with Adam a constant factor only rescales the learning signal.
  """
  return jnp.mean(jnp.sum(per_element, axis=-1))
