"""Carrier webhooks kept on local disk while the database cannot be reached, replayed after.

A carrier does not send a call's callbacks twice: Twilio retries neither status callbacks nor
`<Dial>` actions, so a callback refused during a database outage (a PostgreSQL restart, a
failover) would be lost, and a call rung through the voice fallback (`FALLBACK_PATH`, which
needs no database) would never be stored. Each is appended to a file under
`CALLTRACK_SPOOL_DIR` (one line of JSON, written and fsynced before the carrier gets its
answer), and every worker replays what is there once the database answers again, with the
time it was received: a call is attributed to whoever held the number then.

Several workers on one host may share the directory. Writers append to `webhooks.jsonl` under
an exclusive `flock`, after checking that the path still names the file they opened; a
replayer first renames that file to `replaying-<id>.jsonl` (new webhooks start a new file), then
locks the renamed file, which waits for a writer still inside it. The lock is held while the
file is replayed, so two replayers never replay one file, and a replayer that dies lets go of
it. What cannot be replayed for another reason than an outage goes to `failed.jsonl` for the
operator, with the error; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tracker.metrics import CARRIER_SPOOL

log = logging.getLogger("calltrack.spool")

SPOOL_FILE = "webhooks.jsonl"
CLAIMED_PREFIX = "replaying-"
FAILED_FILE = "failed.jsonl"
# How often a worker looks for spooled webhooks (an outage usually lasts seconds to minutes).
REPLAY_SECONDS = 5.0
# Set-aside lines hold callers' numbers: the operator has this long to look at them (as long
# as carrier callbacks that never matched a call are kept), then each worker deletes them.
SET_ASIDE_TTL = dt.timedelta(days=30)
PRUNE_SECONDS = 3600.0


@dataclass(frozen=True)
class SpooledWebhook:
    """One carrier webhook as it arrived: which kind, from whom, its parameters and when."""

    kind: str
    provider: str
    params: dict[str, str]
    received_at: dt.datetime

    def to_line(self) -> bytes:
        data = {
            "kind": self.kind,
            "provider": self.provider,
            "params": self.params,
            "received_at": self.received_at.isoformat(),
        }
        return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> SpooledWebhook:
        data = json.loads(line)
        params = data["params"]
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise ValueError("params must map names to strings")
        received = dt.datetime.fromisoformat(data["received_at"])
        if received.tzinfo is None:
            raise ValueError("received_at has no time zone")
        return cls(str(data["kind"]), str(data["provider"]), params, received)


def _append_locked(path: Path, lines: bytes) -> None:
    """Append under an exclusive lock to the file `path` names now (not a renamed one)."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                new_file = os.fstat(fd).st_size == 0
                os.write(fd, lines)
                os.fsync(fd)
                if new_file:
                    _sync_directory(path.parent)  # the file's name must survive a crash too
                return
        finally:
            os.close(fd)  # also lets go of the lock


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(spool_dir: str | Path, entry: SpooledWebhook) -> None:
    """Keep one webhook durably (blocking: call it in a thread)."""
    directory = Path(spool_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _append_locked(directory / SPOOL_FILE, entry.to_line())


async def spool(spool_dir: str | Path, entry: SpooledWebhook) -> None:
    """Keep one webhook durably before the carrier is answered."""
    await asyncio.to_thread(append, spool_dir, entry)
    CARRIER_SPOOL.labels("spooled").inc()
    log.warning(
        "database unreachable: %s webhook of call %s kept in %s for replay",
        entry.kind,
        entry.params.get("CallSid", "?"),
        spool_dir,
    )


def pending(spool_dir: str | Path) -> int:
    """Count the webhooks waiting in the spool (blocking; for tests and operators)."""
    directory = Path(spool_dir)
    count = 0
    for path in [directory / SPOOL_FILE, *directory.glob(f"{CLAIMED_PREFIX}*.jsonl")]:
        with contextlib.suppress(FileNotFoundError):
            count += sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return count


def _claim(directory: Path) -> list[Path]:
    """Move the file being written aside, and list every file waiting for replay."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(
            directory / SPOOL_FILE, directory / f"{CLAIMED_PREFIX}{secrets.token_hex(8)}.jsonl"
        )
    return sorted(directory.glob(f"{CLAIMED_PREFIX}*.jsonl"), key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _lock(path: Path) -> tuple[int, list[bytes]] | None:
    """Lock a claimed file and read it; None when another replayer has it or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd, [line for line in path.read_bytes().splitlines() if line.strip()]
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def _rewrite(path: Path, lines: list[bytes]) -> None:
    """Make `path` hold exactly these lines (none: remove it), atomically and durably."""
    if lines:
        fresh = path.with_suffix(".new")
        out = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(out, b"".join(line + b"\n" for line in lines))
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(fresh, path)
    else:
        path.unlink()
    _sync_directory(path.parent)


def _unlock(path: Path, fd: int, rest: list[bytes], done: int) -> None:
    """Remove a replayed file, or keep what is left of it; then let go of it."""
    try:
        if done or not rest:
            _rewrite(path, rest)
    finally:
        os.close(fd)


Replay = Callable[[SpooledWebhook], Awaitable[None]]
IsOutage = Callable[[BaseException], bool]


async def replay(spool_dir: str | Path, apply: Replay, is_outage: IsOutage) -> int:
    """Replay every spooled webhook in order of arrival; return how many were applied.

    `apply` stores one webhook; an error for which `is_outage` is true stops the replay and
    keeps that webhook and the ones after it for the next round.
    """
    directory = Path(spool_dir)
    applied = 0
    for path in await asyncio.to_thread(_claim, directory):
        claimed = await asyncio.to_thread(_lock, path)
        if claimed is None:
            continue
        fd, lines = claimed
        done = 0
        try:
            for line in lines:
                applied += await _replay_line(directory, line, apply, is_outage)
                done += 1
        finally:
            await asyncio.to_thread(_unlock, path, fd, lines[done:], done)
    return applied


async def _replay_line(directory: Path, line: bytes, apply: Replay, is_outage: IsOutage) -> bool:
    """Apply one spooled line; False when it was set aside instead."""
    try:
        entry = SpooledWebhook.from_line(line)
    except (ValueError, KeyError, TypeError) as exc:
        # A line torn by a crash while it was written, or edited by hand.
        await asyncio.to_thread(_set_aside, directory, line, f"unreadable: {exc}")
        return False
    try:
        await apply(entry)
    except Exception as exc:
        if is_outage(exc):
            raise
        log.exception("spooled %s webhook could not be replayed", entry.kind)
        await asyncio.to_thread(_set_aside, directory, line, f"{type(exc).__name__}: {exc}")
        return False
    CARRIER_SPOOL.labels("replayed").inc()
    return True


def _set_aside(directory: Path, line: bytes, reason: str) -> None:
    CARRIER_SPOOL.labels("set_aside").inc()
    record = {
        "line": line.decode("utf-8", "replace"),
        "error": reason[:500],
        "set_aside_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    _append_locked(
        directory / FAILED_FILE, (json.dumps(record, ensure_ascii=False) + "\n").encode()
    )


def _set_aside_at(record_line: bytes) -> dt.datetime | None:
    """When a line was set aside (else when its webhook arrived); None if it says neither."""
    try:
        record = json.loads(record_line)
        when = record.get("set_aside_at") or json.loads(record["line"])["received_at"]
        moment = dt.datetime.fromisoformat(when)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return moment if moment.tzinfo is not None else None


def prune_set_aside(
    spool_dir: str | Path, now: dt.datetime, ttl: dt.timedelta = SET_ASIDE_TTL
) -> int:
    """Delete set-aside lines older than `ttl` (blocking); return how many went.

    A line that says no time is kept for the operator. Writers append to the file this
    replaces only under its lock, and reopen it when the path names another file.
    """
    path = Path(spool_dir) / FAILED_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            return 0  # replaced meanwhile by another worker's prune: next round
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        cutoff = now - ttl
        kept = [line for line in lines if (at := _set_aside_at(line)) is None or at >= cutoff]
        if len(kept) == len(lines):
            return 0
        _rewrite(path, kept)
        return len(lines) - len(kept)
    except FileNotFoundError:
        return 0
    finally:
        os.close(fd)


async def replay_forever(spool_dir: str | Path, apply: Replay, is_outage: IsOutage) -> None:
    """Look for spooled webhooks every few seconds until cancelled; prune set-aside ones."""
    loop = asyncio.get_running_loop()
    pruned_at = -PRUNE_SECONDS
    while True:
        if loop.time() - pruned_at >= PRUNE_SECONDS:
            pruned_at = loop.time()
            try:
                now = dt.datetime.now(dt.UTC)
                if pruned := await asyncio.to_thread(prune_set_aside, spool_dir, now):
                    log.info("deleted %d set-aside carrier webhooks past %s", pruned, SET_ASIDE_TTL)
            except OSError:
                log.exception("pruning set-aside carrier webhooks failed")
        try:
            applied = await replay(spool_dir, apply, is_outage)
            if applied:
                log.info("replayed %d spooled carrier webhooks", applied)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_outage(exc):
                log.exception("replaying spooled carrier webhooks failed")
        await asyncio.sleep(REPLAY_SECONDS)
