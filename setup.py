from setuptools import find_packages, setup

setup(
    name="hpcgan",
    version="0.1.0",
    description="Distributed HPC training of conditional GANs for science (Horovod/MPI, sharded HDF5, SLURM).",
    packages=find_packages(include=["hpcgan", "hpcgan.*"]),
    package_data={"hpcgan": ["configs/*.yaml"]},
    python_requires=">=3.9",
    # torch is deliberately unpinned: clusters provide their own build (P100 needs the CUDA 12.6 wheels).
    # The floor is hpcgan.runtime.versions.MIN_TORCH (torch.amp.GradScaler(device_type) needs 2.3).
    install_requires=["torch>=2.3", "numpy", "h5py", "pyyaml", "mpi4py", "tqdm", "matplotlib", "tensorboard", "safetensors"],
    extras_require={
        "horovod": ["horovod==0.28.1"],
        "test": ["pytest", "pytest-timeout"],
        "dev": ["pytest", "pytest-timeout"],
    },
    entry_points={"console_scripts": ["hpcgan=hpcgan.cli.main:main"]},
)
