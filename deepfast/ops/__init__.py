"""Fused ops: one function per op, with the backend choice, autograd and a pure-torch reference."""

from deepfast.ops.reparam_kl import reparameterize_kl, reparameterize_kl_reference

__all__ = ["reparameterize_kl", "reparameterize_kl_reference"]
