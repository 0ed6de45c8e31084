"""The generic GAN training loop, its losses, checkpoints and logging."""
