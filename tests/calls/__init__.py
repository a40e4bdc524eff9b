"""calls tests."""
