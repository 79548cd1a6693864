"""Running the loop on one machine: local servers, the traffic replay, the demo."""
