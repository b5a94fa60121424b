"""reconcile: declarative reconciliation of partner-API evaluation users."""

__version__ = "0.1.0"
