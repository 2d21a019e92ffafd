"""The parity harness: one model registry, one compare function, one tolerance table, the layer
walk (chained and injected), fixtures in the official file formats, and the report."""
