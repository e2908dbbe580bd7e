"""unipose_ray: Ray-distributed multi-teacher distillation for unified 2D pose."""
