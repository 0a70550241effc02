"""On-disk response cache in SQLite (WAL mode), safe across processes.

The key is the sha256 of the canonical request: provider, base_url, model,
messages and every sampling/format parameter, plus an optional salt for
deliberate resampling. Purpose, variable ids and metadata are not part of
it (they do not change what a model returns). API keys are never stored.
When the file grows past `max_bytes`, the least recently used rows go.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def default_cache_path() -> Path:
    root = os.environ.get("TEXTGRAPH_CACHE_DIR")
    if root:
        return Path(root) / "cache.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "textgraph" / "cache.sqlite"


def request_key(
    request: ChatRequest, *, provider: str, base_url: str | None, model: str, salt: str | None
) -> str:
    canonical = {
        "provider": provider,
        "base_url": base_url,
        "model": request.model or model,
        "messages": [[m.role, m.content] for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "seed": request.seed,
        "response_format": (
            request.response_format.model_dump() if request.response_format else None
        ),
        "salt": salt,
    }
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT "
                "NULL, size INTEGER NOT NULL, created REAL NOT NULL, accessed REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS responses_accessed ON responses(accessed)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    def get(self, key: str) -> ChatResponse | None:
        db = self._connect()
        row = db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        db.execute("UPDATE responses SET accessed = ? WHERE key = ?", (time.time(), key))
        self.hits += 1
        return ChatResponse.model_validate_json(row[0])

    def put(self, key: str, response: ChatResponse) -> None:
        data = response.model_dump_json()
        now = time.time()
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
        db = self._connect()
        entries, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM responses"
        ).fetchone()
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": size,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }

    def clear(self) -> int:
        db = self._connect()
        removed = db.execute("DELETE FROM responses").rowcount
        db.execute("VACUUM")
        return removed

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
