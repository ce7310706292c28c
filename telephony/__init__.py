"""Carriers, webhooks and calls."""
