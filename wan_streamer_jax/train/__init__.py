"""Train state, optimizer, step, loop, checkpoints."""
