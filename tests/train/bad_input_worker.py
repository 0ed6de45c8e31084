"""`mpirun -np N python bad_input_worker.py CASES.json`: run `hpcgan train` on many bad inputs in one job.

Each case is the CLI's own entry point (hpcgan.cli.main.main) with its argument list,
one after another in the same processes: the backend is started and stopped per case
(mpi4py keeps MPI initialised in between, so Horovod can start again). Per case and
rank one JSON line on stdout: the exit code main() returned and what it wrote to stderr.
Starting a job per case would cost seconds of start-up each; the exit and launcher
behaviour of a real job is checked separately with the `hpcgan` command itself.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys

from mpi4py import MPI  # noqa: F401  (initialises MPI for the whole run, before Horovod)

from hpcgan.cli.main import main
from hpcgan.runtime.env import detect_process


def run() -> None:
    cases = json.loads(open(sys.argv[1]).read())
    rank = detect_process().rank
    for name, argv in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        print(json.dumps({"case": name, "rank": rank, "code": code, "stderr": err.getvalue()}), flush=True)


if __name__ == "__main__":
    run()
