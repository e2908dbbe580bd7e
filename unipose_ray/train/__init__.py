"""Student training on Ray Train: the driver's run, the workers' loop, their input pipeline."""
