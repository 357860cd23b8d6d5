"""Built-in pruning methods; importing this package registers them."""

from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.methods.dense import Dense
from benchmarks.methods.group_lasso import GroupLasso
from benchmarks.methods.magnitude import MagnitudePruning
from benchmarks.methods.slimming import NetworkSlimming
from benchmarks.methods.vibnet import VIBNet

__all__ = ["Dense", "GroupLasso", "MagnitudePruning", "MethodParams", "NetworkSlimming", "PruningMethod", "VIBNet"]
