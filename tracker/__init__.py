"""Visitor tracking: sessions, channels, numbers, leases and the core store."""
