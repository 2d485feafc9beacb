"""Data sources (built-in, files, registry, in-memory) and the Dataset they all produce."""
