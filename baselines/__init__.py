"""Baseline pruning methods as libraries that depend on torch only."""

from baselines.group_lasso import group_lasso_penalty, incoming_group_norms, outgoing_group_norms
from baselines.magnitude import (
    apply_masks,
    cubic_sparsity,
    make_permanent,
    prunable_weights,
    prune_to_sparsity,
    pruned_count,
    weight_count,
)
from baselines.slimming import batchnorm_scales, global_threshold, insert_batchnorm, slimming_penalty

__all__ = [
    "apply_masks",
    "batchnorm_scales",
    "cubic_sparsity",
    "global_threshold",
    "group_lasso_penalty",
    "incoming_group_norms",
    "insert_batchnorm",
    "make_permanent",
    "outgoing_group_norms",
    "prunable_weights",
    "prune_to_sparsity",
    "pruned_count",
    "slimming_penalty",
    "weight_count",
]
