"""files tests."""
