"""Run under mpirun by test_data_mpi.py: each rank reads its share and records the indices it got.

usage: mpi_reader_worker.py DATA_GLOB OUT_DIR BATCH
Writes OUT_DIR/rank-R.json: {remainder: {epoch: [[indices of batch] ...]}} decoded from the data read.
"""
import json
import sys

import numpy as np

from hpcgan.data.reader import ShardedReader
from hpcgan.runtime.env import detect_process


def main() -> None:
    data, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    info = detect_process()
    result = {"size": info.size}
    for remainder in ("drop", "pad"):
        rd = ShardedReader(data, info.rank, info.size, batch, seed=9, remainder=remainder, normalize=False,
                           prefetch=2)
        result[remainder] = {}
        for epoch in (0, 1):
            result[remainder][epoch] = [x[:, 0, 0, 0].numpy().astype(np.int64).tolist() for x, _, _ in rd.epoch(epoch)]
        result[remainder]["resumed"] = [x[:, 0, 0, 0].numpy().astype(np.int64).tolist() for x, _, _ in rd.epoch(1, 2)]
    with open(f"{out}/rank-{info.rank}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
