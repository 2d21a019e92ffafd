"""Registry rows (ModelSpec) of the reference models."""
