"""Data layer, shared by every workload: HDF5 format (write/validate), sharded reader, staging, stats, inspect.

What belongs to one workload (its synthetic generator, converters and physics) lives in its folder
under hpcgan/workloads/.

Receives rank and size as plain integers; never imports the communication backend
(the `hpcgan data` CLI does that).
"""
from hpcgan.data.format import FORMAT_VERSION, SYNTH_BLOCK, DatasetWriter, read_attrs, validate
from hpcgan.data.reader import ShardedReader

__all__ = ["FORMAT_VERSION", "SYNTH_BLOCK", "DatasetWriter", "read_attrs", "validate", "ShardedReader"]
