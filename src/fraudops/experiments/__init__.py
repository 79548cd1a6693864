"""Live experiments: routing, A/B and shadow analysis, the promotion gate."""
