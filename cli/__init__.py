"""The ``p2pchat`` command-line client; it talks to p2pchatd only through the control API."""
