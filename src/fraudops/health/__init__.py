"""Model health in production: what a monitoring window says about the model, and the decision."""
