"""fraudops: an end-to-end MLOps reference pipeline for credit-card fraud detection.

Importing the package switches usage telemetry off (``fraudops.telemetry``) before any
library that reports usage is imported, for this process and the processes it starts.
"""

from fraudops.telemetry import switch_off

switch_off()
