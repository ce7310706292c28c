"""Import every module that declares models so `Base.metadata` is complete (Alembic, tests)."""

import tracker.models  # noqa: F401
