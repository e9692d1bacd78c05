"""linpath: loss along linear paths between network states, per model and per layer."""

__version__ = "0.1.0"
