"""The prediction log's schema revisions, applied in order by ``fraudops.logs.migrate``."""
