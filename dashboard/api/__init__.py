"""The REST API under /api/v1: per-account bearer tokens, one route table, one OpenAPI document."""
