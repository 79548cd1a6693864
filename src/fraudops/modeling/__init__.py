"""Models: candidates, the training run's steps, evaluation, plots, the flat tree walker."""
