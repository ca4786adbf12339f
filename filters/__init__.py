"""Filters: one file each. A filter scores a pair; factory.stage.Filter applies the thresholds."""
