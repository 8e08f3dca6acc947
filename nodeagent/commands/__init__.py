"""One module per CLI command: each turns Settings into a Result (nothing else prints)."""
