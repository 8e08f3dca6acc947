"""Helpers shared by the test suite (real processes, real files; no mocks)."""
