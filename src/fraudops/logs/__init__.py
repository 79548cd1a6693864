"""The prediction and label logs serving writes and monitoring reads."""
