"""One batch of collect writes on PostgreSQL: one statement, one round trip.

The generic path (`Collector._write`, used on SQLite) runs one `executemany` per kind of row
inside a transaction: BEGIN, up to six statements, COMMIT, and PostgreSQL executes every row
of an `executemany` on its own. Here the whole batch is a single statement whose data-modifying
CTEs take their rows as arrays (`unnest`), so PostgreSQL sees one set-based statement (its own
implicit transaction: all of it commits, or none) and the worker waits for one round trip.

What a single statement changes, and how it is handled:
- Every CTE sees the database as it was when the statement began, and a row may be changed by
  only one of them. So a batch's updates of one visit are merged here first (last activity,
  pages added, latest page, latest consent), a page's time-on-page that arrives in the batch
  that inserts the page is folded into the inserted row, and a cart keeps its latest snapshot.
  A visit and a later event of the same visit are never in one batch: the collector makes the
  later event wait for the commit of the visit's first row.
- The statement is planned for each batch (its own connections, with `plan_cache_mode =
  force_custom_plan`): a prepared statement's generic plan, chosen while the tables were
  small, kept scanning them as they grew (PostgreSQL time per batch doubled within a minute
  of `calltrack bench collect`).
- Foreign keys are checked at the end of the statement, so pageviews of a visit inserted by the
  same statement are accepted; a pageview of a visit erased meanwhile fails the statement with
  a foreign key violation, which the collector turns into "write the events one by one".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Column, Table
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker.db import create_engine

Row = dict[str, Any]


# SQLAlchemy's dialect constructors carry no annotations.
_DIALECT = PGDialect()  # type: ignore[no-untyped-call]


def _sql_type(column: Column[Any]) -> str:
    rendered: str = column.type.compile(dialect=_DIALECT)
    # Array casts do not take lengths or precisions (they would be checked row by row anyway).
    return rendered.split("(", 1)[0]


class PostgresBatchWriter:
    """Write a grouped batch (statement name → rows) as one PostgreSQL statement."""

    def __init__(
        self, engine: AsyncEngine, sessions: Table, pageviews: Table, carts: Table, writers: int
    ) -> None:
        # Connections of its own, one per concurrent batch (see the module's docstring).
        self._engine = create_engine(
            engine.url.render_as_string(hide_password=False),
            pool_size=writers,
            session_settings={
                "plan_cache_mode": "force_custom_plan",
                "application_name": "calltrack-collect",
            },
        )
        self._sessions = sessions
        self._pageviews = pageviews
        self._carts = carts
        self._session_columns = [c.key for c in sessions.columns]
        self._json_session = {c.key for c in sessions.columns if _sql_type(c) in ("JSON", "JSONB")}
        self._pageview_columns = [c.key for c in pageviews.columns if c.key != "id"]
        self._cart_columns = [c.key for c in carts.columns]
        self._json_cart = {c.key for c in carts.columns if _sql_type(c) in ("JSON", "JSONB")}
        self._sql: dict[tuple[str, ...], str] = {}

    # -- SQL ---------------------------------------------------------------------------------

    def _statement(self, parts: tuple[str, ...]) -> str:
        sql = self._sql.get(parts)
        if sql is None:
            sql = self._sql[parts] = self._build(parts)
        return sql

    def _build(self, parts: tuple[str, ...]) -> str:
        counter = iter(range(1, 1000))

        def arrays(table: Table, names: Sequence[str]) -> str:
            columns = {c.key: c for c in table.columns}
            return ", ".join(f"${next(counter)}::{_sql_type(columns[name])}[]" for name in names)

        ctes: list[str] = []
        s, p, c = self._sessions.name, self._pageviews.name, self._carts.name
        if "new_sessions" in parts:
            names = self._session_columns
            ctes.append(
                f"new_sessions AS (INSERT INTO {s} ({', '.join(names)}) "
                f"SELECT * FROM unnest({arrays(self._sessions, names)}))"
            )
        if "pageviews" in parts:
            names = self._pageview_columns
            ctes.append(
                f"new_pageviews AS (INSERT INTO {p} ({', '.join(names)}) "
                f"SELECT * FROM unnest({arrays(self._pageviews, names)}) "
                f"ON CONFLICT (session_id, page_id) DO NOTHING RETURNING session_id)"
            )
        if "sessions" in parts:
            n = [next(counter) for _ in range(8)]
            # Pages counted as inserted: a pageview sent again (a resend after a worker
            # restart, which the restarted worker's cache cannot recognise) adds no row.
            added, joined = "0", ""
            if "pageviews" in parts:
                added = "COALESCE(np.n, 0)"
                joined = (
                    " LEFT JOIN (SELECT session_id, count(*) AS n FROM new_pageviews "
                    "GROUP BY session_id) AS np ON np.session_id = v.id"
                )
            ctes.append(
                f"session_updates AS (UPDATE {s} AS s SET "
                "last_seen_at = GREATEST(s.last_seen_at, v.seen), "
                f"pageview_count = COALESCE(s.pageview_count, 0) + {added}, "
                "current_url = CASE WHEN v.pages > 0 THEN v.url ELSE s.current_url END, "
                "current_title = CASE WHEN v.pages > 0 THEN v.title ELSE s.current_title END, "
                "consent = CASE WHEN v.set_consent THEN v.consent ELSE s.consent END, "
                "visitor_id = CASE WHEN v.set_consent THEN v.visitor ELSE s.visitor_id END "
                f"FROM unnest(${n[0]}::varchar[], ${n[1]}::timestamptz[], ${n[2]}::integer[], "
                f"${n[3]}::text[], ${n[4]}::varchar[], ${n[5]}::boolean[], ${n[6]}::boolean[], "
                f"${n[7]}::varchar[]) "
                f"AS v(id, seen, pages, url, title, set_consent, consent, visitor){joined} "
                "WHERE s.id = v.id)"
            )
        if "durations" in parts:
            n = [next(counter) for _ in range(3)]
            ctes.append(
                f"duration_updates AS (UPDATE {p} AS p SET duration_ms = v.duration "
                f"FROM unnest(${n[0]}::varchar[], ${n[1]}::varchar[], ${n[2]}::integer[]) "
                "AS v(session_id, page_id, duration) "
                "WHERE p.session_id = v.session_id AND p.page_id = v.page_id "
                "AND p.duration_ms < v.duration)"
            )
        if "carts" in parts:
            names = self._cart_columns
            updates = ", ".join(
                f"{name} = EXCLUDED.{name}" for name in names if name != "session_id"
            )
            ctes.append(
                f"cart_upserts AS (INSERT INTO {c} ({', '.join(names)}) "
                f"SELECT * FROM unnest({arrays(self._carts, names)}) "
                f"ON CONFLICT (session_id) DO UPDATE SET {updates})"
            )
        return "WITH " + ", ".join(ctes) + " SELECT 1"

    # -- rows → arrays -----------------------------------------------------------------------

    @staticmethod
    def _columns(
        rows: Sequence[Row], names: Sequence[str], json_names: set[str]
    ) -> list[list[Any]]:
        columns: list[list[Any]] = []
        for name in names:
            if name in json_names:
                columns.append([_json(row.get(name)) for row in rows])
            else:
                columns.append([row.get(name) for row in rows])
        return columns

    def arguments(self, grouped: Mapping[str, list[Row]]) -> tuple[tuple[str, ...], list[Any]]:
        """Merge the batch's rows into the statement's parts and array arguments."""
        parts: list[str] = []
        args: list[Any] = []
        new_sessions = grouped.get("new_sessions")
        if new_sessions:
            parts.append("new_sessions")
            args += self._columns(new_sessions, self._session_columns, self._json_session)

        pageviews = grouped.get("pageviews") or []
        inserted = {(row["session_id"], row["page_id"]): row for row in pageviews}
        durations: dict[tuple[str, str], int] = {}
        for row in grouped.get("durations") or ():
            key = (row["b_session"], row["b_page"])
            page = inserted.get(key)
            if page is not None:
                # The page is inserted by this very statement: the update would not see it.
                page["duration_ms"] = max(page["duration_ms"] or 0, row["b_duration"])
            elif row["b_duration"] > durations.get(key, -1):
                durations[key] = row["b_duration"]
        if pageviews:
            parts.append("pageviews")
            args += self._columns(list(inserted.values()), self._pageview_columns, set())

        updates = _merge_session_updates(grouped)
        if updates:
            parts.append("sessions")
            args += [list(values) for values in zip(*updates.values(), strict=True)]
        if durations:
            parts.append("durations")
            keys = sorted(durations)
            args += [[k[0] for k in keys], [k[1] for k in keys], [durations[k] for k in keys]]
        carts = grouped.get("carts")
        if carts:
            latest = {row["session_id"]: row for row in carts}  # the latest snapshot wins
            parts.append("carts")
            rows = [latest[key] for key in sorted(latest)]
            args += self._columns(rows, self._cart_columns, self._json_cart)
        return tuple(parts), args

    async def close(self) -> None:
        await self._engine.dispose()

    async def write(self, grouped: Mapping[str, list[Row]]) -> None:
        parts, args = self.arguments(grouped)
        if not parts:
            return
        sql = self._statement(parts)
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                # Outside any explicit transaction: the statement is its own transaction.
                await driver.execute(sql, *args)
            except asyncpg.IntegrityConstraintViolationError as exc:
                # The collector's contract (as with SQLAlchemy): a vanished visit is an
                # IntegrityError, and the event is retried as a new visit.
                raise IntegrityError(sql, None, exc) from exc


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _merge_session_updates(grouped: Mapping[str, list[Row]]) -> dict[str, tuple[Any, ...]]:
    """One update per visit: (id, seen, pages, url, title, set_consent, consent, visitor)."""
    merged: dict[str, list[Any]] = {}

    def entry(session_id: str) -> list[Any]:
        found = merged.get(session_id)
        if found is None:
            found = merged[session_id] = [session_id, None, 0, None, None, False, None, None]
        return found

    for row in grouped.get("session_pages") or ():
        item = entry(row["b_id"])
        item[2] += 1
        if item[1] is None or row["b_seen"] >= item[1]:
            item[1], item[3], item[4] = row["b_seen"], row["b_url"], row["b_title"]
    for row in grouped.get("session_seen") or ():
        item = entry(row["b_id"])
        if item[1] is None or row["b_seen"] > item[1]:
            item[1] = row["b_seen"]
    for row in grouped.get("session_consent") or ():
        item = entry(row["b_id"])
        item[5], item[6], item[7] = True, row["b_consent"], row["b_visitor"]
    # Sorted by visit: two statements running at once lock the rows they share in one order.
    return {key: tuple(merged[key]) for key in sorted(merged)}
