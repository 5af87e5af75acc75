"""Shared helpers for tests, bench and the demo: sample apps, a private nginx, waiting."""
