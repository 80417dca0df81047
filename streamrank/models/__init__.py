"""Neural network modules: shared layers, ranking models (and later scenario and retrieval models)."""
