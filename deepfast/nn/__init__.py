"""Drop-in layers built on the fused ops."""

from deepfast.nn.reparameterize import Reparameterize

__all__ = ["Reparameterize"]
