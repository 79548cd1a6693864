"""Features, model selection and batch scoring on a Dask cluster, equal to the local path."""
