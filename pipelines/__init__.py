"""Prefect glue: the training, promotion, monitoring and retraining flows, and their deployments."""
