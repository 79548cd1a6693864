"""Features: the one definition (offline and online) and the online store serving reads."""
