"""Fused ops: one function per op, with the backend choice, autograd and a pure-torch reference."""

from deepfast.ops.cycle_l1 import cycle_l1, cycle_l1_reference
from deepfast.ops.norm_leaky_relu import (
    batch_norm_leaky_relu,
    batch_norm_leaky_relu_reference,
    instance_norm_leaky_relu,
    instance_norm_leaky_relu_reference,
)
from deepfast.ops.pgd_step import pgd_random_start, pgd_step, pgd_step_, pgd_step_reference
from deepfast.ops.reparameterize_kl import reparameterize_kl, reparameterize_kl_reference

__all__ = [
    "batch_norm_leaky_relu",
    "batch_norm_leaky_relu_reference",
    "cycle_l1",
    "cycle_l1_reference",
    "instance_norm_leaky_relu",
    "instance_norm_leaky_relu_reference",
    "pgd_random_start",
    "pgd_step",
    "pgd_step_",
    "pgd_step_reference",
    "reparameterize_kl",
    "reparameterize_kl_reference",
]
