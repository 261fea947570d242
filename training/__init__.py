"""Command-line training pipeline: prepare, train, build, evaluate (python -m training.X --help)."""
