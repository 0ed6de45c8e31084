"""LHC track workload: measured hits (+ mask, + noise) -> the conventionally fitted helix.

Importing the package registers the workload under the name "lhc".
"""
from hpcgan.workloads.lhc.models import LHCDiscriminator, LHCGenerator
from hpcgan.workloads.lhc.workload import LHCWorkload

__all__ = ["LHCDiscriminator", "LHCGenerator", "LHCWorkload"]
