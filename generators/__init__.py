"""Zoo generation: zoo specs and presets, data sets, hyperparameter sampling, trainers, engines."""
