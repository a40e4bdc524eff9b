"""p2pchat: a serverless, end-to-end encrypted peer-to-peer messenger engine."""

__version__ = "0.1.0"
