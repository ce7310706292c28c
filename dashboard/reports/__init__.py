"""Marketer reports: attribution models, pre-aggregated rollups, queries, costs and exports."""
