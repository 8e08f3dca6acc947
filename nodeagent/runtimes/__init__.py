"""Per-runtime knowledge: option files and handler tables for gVisor and Kata."""
