"""Gradient estimators: which ops run per step and how alpha gets its signal (docs/estimators.md)."""
