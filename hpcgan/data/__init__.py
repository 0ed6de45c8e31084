"""Data layer: HDF5 format (write/validate), sharded reader, synthetic generators, converters, stats.

Receives rank and size as plain integers; never imports the communication backend
(the `hpcgan data` CLI does that).
"""
from hpcgan.data.format import FORMAT_VERSION, SYNTH_BLOCK, DatasetWriter, read_attrs, validate
from hpcgan.data.reader import ShardedReader

__all__ = ["FORMAT_VERSION", "SYNTH_BLOCK", "DatasetWriter", "read_attrs", "validate", "ShardedReader"]
