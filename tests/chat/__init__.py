"""chat tests."""
