"""Training: the loop, checkpoints, optimisers, distributed runs, interrupts, progress, peers."""
