"""Past one process: batch features and scoring on a Dask cluster, equal to the local path."""
