"""LHC track workloads, registered on import: "lhc" (measured hits (+ mask, + noise) -> the conventionally
fitted helix) and "lhc-fastsim" (true particle -> what the full simulation + fit reconstructs).
"""
from hpcgan.workloads.lhc.fastsim import LHCFastSimWorkload
from hpcgan.workloads.lhc.models import LHCDiscriminator, LHCGenerator
from hpcgan.workloads.lhc.workload import LHCWorkload

__all__ = ["LHCDiscriminator", "LHCFastSimWorkload", "LHCGenerator", "LHCWorkload"]
