"""What the jobs run: checks before work, the distill comparison, training runs, sweeps."""
