"""The Flower ServerApp: aggregation, filtering, per-round probe evaluation, checkpoints."""
