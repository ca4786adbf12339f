"""Metrics: pure functions of arrays (and of models passed in), used by filters and by eval."""
