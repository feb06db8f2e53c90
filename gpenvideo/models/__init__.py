"""Neural network code: the GPEN generator, its checkpoints, and batched inference."""
