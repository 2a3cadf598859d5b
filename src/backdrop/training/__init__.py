"""Training: sampling, augmentation, losses, checkpoints, the loop and the multi-process launcher."""
