"""net tests."""
