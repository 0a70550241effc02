"""On-disk response cache in SQLite (WAL mode), safe across processes.

The key is the sha256 of the canonical request: provider, base_url, model,
messages (an image by its sha256 and media type, never its bytes) and every sampling/format
parameter, plus an optional salt for
deliberate resampling. Purpose, variable ids and metadata are not part of
it (they do not change what a model returns). API keys are never stored.
When the file grows past `max_bytes`, the least recently used rows go.

A file SQLite cannot read (corrupt, another schema, another program's database) is a
CacheError naming the file and the fix (`textgraph cache clear`, which moves it aside); a row
that does not hold a valid response is a miss, logged and replaced by the next reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Message
from textgraph.errors import CacheError

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def default_cache_path() -> Path:
    root = os.environ.get("TEXTGRAPH_CACHE_DIR")
    if root:
        return Path(root) / "cache.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "textgraph" / "cache.sqlite"


def request_key(
    request: ChatRequest,
    *,
    provider: str,
    base_url: str | None,
    model: str,
    salt: str | None,
    settings: dict[str, Any] | None = None,
) -> str:
    """`settings` are the engine's own settings that reach the wire (Engine.wire_settings);
    unset ones (None) are left out, so an engine without any keys as it always did."""
    canonical: dict[str, Any] = {
        "provider": provider,
        "base_url": base_url,
        "model": request.model or model,
        "messages": [_message_key(m) for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "seed": request.seed,
        "response_format": (
            request.response_format.model_dump() if request.response_format else None
        ),
        "salt": salt,
    }
    engine = {k: v for k, v in (settings or {}).items() if v is not None}
    if engine:
        canonical["engine"] = engine
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _message_key(message: Message) -> list[Any]:
    """[role, content] as always; a message with parts adds each part's dump, which for an
    image is its sha256, size and media type (the bytes themselves are never in a key)."""
    if not message.parts:
        return [message.role, message.content]
    return [message.role, message.content, [p.model_dump() for p in message.parts]]


COLUMNS = ("key", "response", "size", "created", "accessed")

log = logging.getLogger(__name__)


class ResponseCache:
    """The response cache file. Every SQLite failure is a CacheError naming the file and the
    fix; a row that does not hold a valid response is a miss (logged) and is replaced."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._local = threading.local()
        if self.path.is_dir():
            raise CacheError(
                f"response cache {self.path} is a directory; pass cache= a file path such as "
                f"{str(self.path / 'cache.sqlite')!r}, or cache=False"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        """Create the table, or check that the file holds this cache's table."""
        with self._guard("opening it"):
            db = self._connect()
            tables = {
                row[0]
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            }
            if tables and "responses" not in tables:
                raise self._error(
                    f"it is a SQLite database of something else (tables {sorted(tables)})"
                )
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT "
                "NULL, size INTEGER NOT NULL, created REAL NOT NULL, accessed REAL NOT NULL)"
            )
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(responses)"))
            if sorted(columns) != sorted(COLUMNS):
                raise self._error(
                    f"its responses table has columns {list(columns)}, not {list(COLUMNS)} "
                    "(another program's or version's schema)"
                )
            db.execute("CREATE INDEX IF NOT EXISTS responses_accessed ON responses(accessed)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=30000")
            except BaseException:
                db.close()
                raise
            self._local.db = db
        return db

    def _error(self, problem: str) -> CacheError:
        return CacheError(
            f"response cache {self.path} cannot be used: {problem}. Run `textgraph cache clear "
            f"--path {self.path}` (it moves the broken file aside and starts an empty cache), "
            "or pass cache=False or another cache= path"
        )

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """SQLite errors as CacheError, naming the file, what was being done and the fix."""
        try:
            yield
        except sqlite3.DatabaseError as exc:  # OperationalError, "file is not a database", ...
            if "disk is full" in str(exc) or "disk I/O" in str(exc):
                raise CacheError(
                    f"response cache {self.path}: SQLite failed while {doing} ({exc}); free "
                    "disk space, or pass cache=False or a cache= path on another disk"
                ) from None
            if "locked" in str(exc) or "busy" in str(exc):
                raise CacheError(
                    f"response cache {self.path} stayed locked by another process for 30 s "
                    f"while {doing} ({exc}); retry, or pass another cache= path"
                ) from None
            raise self._error(f"SQLite failed while {doing}: {exc}") from None

    def get(self, key: str) -> ChatResponse | None:
        with self._guard("reading a response"):
            db = self._connect()
            row = db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            try:
                response = ChatResponse.model_validate_json(row[0])
            except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                log.warning(
                    "response cache %s: the row for key %s does not hold a valid response "
                    "(%s); treating it as a miss, the next reply replaces it",
                    self.path,
                    key[:12],
                    str(exc).splitlines()[0][:200],
                )
                db.execute("DELETE FROM responses WHERE key = ?", (key,))
                self.misses += 1
                return None
            db.execute("UPDATE responses SET accessed = ? WHERE key = ?", (time.time(), key))
        self.hits += 1
        return response

    def put(self, key: str, response: ChatResponse) -> None:
        data = response.model_dump_json()
        now = time.time()
        with self._guard("storing a response"):
            db = self._connect()
            db.execute(
                "INSERT OR REPLACE INTO responses (key, response, size, created, accessed) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, data, len(data), now, now),
            )
            self._evict(db)

    def _evict(self, db: sqlite3.Connection) -> None:
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0]
        if total <= self.max_bytes:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute("SELECT key, size FROM responses ORDER BY accessed ASC").fetchall()
            excess, doomed = total - self.max_bytes, []
            for key, size in rows:
                if excess <= 0:
                    break
                doomed.append((key,))
                excess -= size
            db.executemany("DELETE FROM responses WHERE key = ?", doomed)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def stats(self) -> dict[str, Any]:
        with self._guard("counting its entries"):
            entries, size = (
                self._connect()
                .execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM responses")
                .fetchone()
            )
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": size,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }

    def clear(self) -> int:
        with self._guard("clearing it"):
            db = self._connect()
            removed = db.execute("DELETE FROM responses").rowcount
            db.execute("VACUUM")
        return removed

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def move_aside(path: str | os.PathLike[str]) -> Path:
    """Rename a broken cache file (and its -wal/-shm companions) to
    `<name>.corrupt-<timestamp>` next to it; nothing is deleted. Returns the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target
