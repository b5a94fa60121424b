"""Desired state: the manifest models, YAML loading with FILE:LINE:COL, password sources."""
