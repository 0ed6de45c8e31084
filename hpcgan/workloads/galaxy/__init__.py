"""Galaxy restoration workload (Schawinski et al. 2017): degraded SDSS-like g, r, i stamp -> clean stamp.

Importing the package registers the workload under the name "galaxy".
"""
from hpcgan.workloads.galaxy.workload import GalaxyWorkload

__all__ = ["GalaxyWorkload"]
