"""scaling: an emergent-ability scaling study harness (train a ladder, probe, fit, report)."""

__version__ = "0.1.0"
