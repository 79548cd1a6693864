"""MLflow: the registry and its aliases."""
