"""CRF workload (Schmidt et al. 2020): U-Net generator, multi-scale PatchGAN, spectral evaluation.

Importing the package registers the workload under the name "crf".
"""
from hpcgan.workloads.crf.models import MultiScaleDiscriminator, UNetGenerator, parameter_count
from hpcgan.workloads.crf.workload import CRFWorkload

__all__ = ["CRFWorkload", "MultiScaleDiscriminator", "UNetGenerator", "parameter_count"]
