"""Persistent model-call cache: SQLite in WAL mode, safe with several processes.

Keys hash backend/model name, method, input and parameters. API keys never enter a key or a value.
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


_INHERITED: list = []  # connections a forked child inherited: kept referenced so they are never closed there


def default_cache_path() -> Path:
    root = os.environ.get("DATAFLYWHEEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dataflywheel", "calls.sqlite")
    return Path(root)


def cache_key(model: str, method: str, payload: Any, params: Any) -> str:
    text = json.dumps([model, method, payload, params], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CallCache:
    """Key -> JSON value store shared by every model and process.

    One SQLite connection per thread and process, opened lazily; a connection opened in a parent process
    is never used (nor closed) in a forked child. Pickles as its path."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reset()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT, method TEXT, "
                       "value TEXT NOT NULL, created REAL NOT NULL)")

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: the parent's connections stay untouched
            _INHERITED.extend(self._opened)
            self._reset()
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    def close(self) -> None:
        """Close this process's connections (the next call reopens one)."""
        if self._pid == os.getpid():
            with self._lock:
                for db in self._opened:
                    db.close()
        self._reset()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._reset()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        db = self._connect()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, items: list[tuple[str, str, str, Any]]) -> None:
        """Store ``(key, model, method, value)`` rows."""
        if not items:
            return
        now = time.time()
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?)",
                           [(k, m, meth, json.dumps(v, ensure_ascii=False), now) for k, m, meth, v in items])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def stats(self) -> dict:
        db = self._connect()
        rows = db.execute("SELECT model, method, COUNT(*) FROM calls GROUP BY model, method ORDER BY model, method")
        entries = [{"model": m, "method": meth, "entries": n} for m, meth, n in rows]
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())
        return {"path": str(self.path), "entries": sum(e["entries"] for e in entries), "bytes": size, "by_model": entries}

    def clear(self, model: str | None = None) -> int:
        db = self._connect()
        if model is None:
            removed = db.execute("DELETE FROM calls").rowcount
        else:
            removed = db.execute("DELETE FROM calls WHERE model = ?", (model,)).rowcount
        db.execute("VACUUM")
        return removed
