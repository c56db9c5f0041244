"""rnnray."""
