"""Science cases. Each registers a Workload; the trainer knows only that interface."""
from hpcgan.workloads.registry import Workload, get_workload, register

__all__ = ["Workload", "get_workload", "register"]
