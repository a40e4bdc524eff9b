"""daemons tests."""
