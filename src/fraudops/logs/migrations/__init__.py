"""Alembic's script directory for the prediction log: ``env.py``, revisions in ``versions/``."""
