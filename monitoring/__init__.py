"""Evidently and NannyML glue: drift and quality reports, the workspace and its dashboards."""
