"""fraudops: an end-to-end MLOps reference pipeline for credit-card fraud detection."""
