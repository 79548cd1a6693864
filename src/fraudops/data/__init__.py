"""Raw data: its schema, the simulator, the on-disk layout, validation, versions and splits."""
