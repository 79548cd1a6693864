"""Quality per customer segment: who bears the false declines and the missed frauds."""
