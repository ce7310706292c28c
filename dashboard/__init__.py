"""Advisor console, marketer reports, settings, the CLI and the app factory."""
