"""relman: deploy a git ref of a Python web app behind nginx with zero failed requests."""

__version__ = "0.1.0"
