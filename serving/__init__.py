"""FastAPI glue: the scoring API, the models it holds, request-time routing, shadow, metrics."""
