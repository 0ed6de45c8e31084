# hpcgan: `make run` (the default job) and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
NP ?= 2
# Open MPI refuses root without these; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
export HDF5_USE_FILE_LOCKING := FALSE
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: env run test test-fast bench clean

env:  ## create .venv with MPI, torch, Horovod (built, cached) and hpcgan; idempotent
	@bash scripts/setup_env.sh

run: env  ## the main job on the built-in default: synthetic data, 2 Horovod ranks under mpirun
	@NP=$(NP) bash scripts/run_default.sh

test: env  ## the whole test suite (unit, mpirun multi-rank, SLURM cluster when root)
	$(PY) -m pytest -ra tests

test-fast: env  ## unit tests only
	$(PY) -m pytest -ra -m "not mpi and not slurm" tests

clean:
	rm -rf runs results .pytest_cache
