"""The live controller's store: SQLite in ``<state_dir>/controller.db``.

WAL mode; operator changes and limit raises are written with ``synchronous=FULL`` (on disk
before the answer), the rest with NORMAL. The file is marked as greenllm's
(``PRAGMA application_id``) and versioned (``PRAGMA user_version``, migrated forward at
start). A database that is corrupt, truncated, someone else's, from a newer greenllm, or
missing where one was before (``controller.db.id`` stays beside it) stops the start-up
with one line saying what and what to do; it is never emptied silently.

While the controller runs, :meth:`SqliteStore.check` (every few seconds, before every
durable write, and after any failed write) makes sure the file is still the one it opened
(its device and inode) and still reads (``PRAGMA quick_check`` on a fresh connection, so
no cached page hides what is on disk). A file replaced, deleted or damaged under it makes
the store refuse every write from then on, naming the path (UNAVAILABLE to operators, in
status and in the ``greenllm_state_writable`` metric): an acknowledged change must never
land in a file nobody can read back. A failed write says what happened: disk full,
read-only, or path missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from scheduler.server.sqlschema import APPLICATION_ID, SCHEMA_VERSION, migrate
from scheduler.shell.ports import (
    Snapshot,
    StoredEvent,
    StoredGpu,
    StoredJob,
    StoredShard,
    StoreError,
    Write,
)

#: Events kept; older ones are deleted as new ones come.
MAX_EVENTS = 100_000
_JOB_COLUMNS = (
    "job_id, seq, spec_json, state, reason, submitted_at_s, generation, restarts, shards_json, "
    "energy_j, work_units, carried_json, energy_start_json, final, ended_at_s"
)


#: SQLite primary result codes a failed write is told by.
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 11, 13, 14
_SQLITE_NOTADB = 26
#: How every SQLite database file begins.
SQLITE_MAGIC = b"SQLite format 3\x00"


def describe_failure(path: Path, exc: sqlite3.Error) -> str:
    """One line saying why a write to ``path`` failed: disk full, read-only, path missing,
    or SQLite's own words (never a secondary error such as a failed rollback)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    folder = path.parent
    free = None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
    if not folder.is_dir() or (code == _SQLITE_CANTOPEN and not path.exists()):
        return f"{path}: path missing (its state directory {folder} is gone): {exc}"
    if code == _SQLITE_FULL or (code == _SQLITE_IOERR and free == 0):
        room = f"{free} bytes free" if free is not None else "free space unknown"
        return f"{path}: disk full ({room} on its file system): {exc}"
    writable = os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if code == _SQLITE_READONLY or not writable:
        return (
            f"{path}: read-only (the file, its directory or its file system refuses writes): {exc}"
        )
    return f"{path}: {exc}"


def _fail(path: Path, exc: sqlite3.Error) -> StoreError:
    return StoreError(describe_failure(path, exc))


def _job(row: tuple[object, ...]) -> StoredJob:
    (
        job_id,
        seq,
        spec_json,
        state,
        reason,
        submitted,
        gen,
        restarts,
        shards,
        energy,
        work,
        carried,
        starts,
        final,
        ended,
    ) = row
    carried_l = json.loads(str(carried))
    return StoredJob(
        job_id=str(job_id),
        seq=int(seq),  # type: ignore[call-overload]
        spec_json=str(spec_json),
        phase=str(state),
        reason=str(reason),
        submitted_at_s=float(submitted),  # type: ignore[arg-type]
        generation=int(gen),  # type: ignore[call-overload]
        restarts=int(restarts),  # type: ignore[call-overload]
        shards=tuple(StoredShard(*s) for s in json.loads(str(shards))),
        energy_j=float(energy),  # type: ignore[arg-type]
        work_units=float(work),  # type: ignore[arg-type]
        carried=(float(carried_l[0]), float(carried_l[1])),
        energy_start_j={(n, int(i)): j for n, i, j in json.loads(str(starts))},
        final=bool(final),
        ended_at_s=float(ended),  # type: ignore[arg-type]
    )


class SqliteStore:
    """A :class:`~scheduler.shell.ports.Store` in SQLite (safe to call from several threads).

    Args:
        path: The database file (created with its folder when missing).

    Raises:
        StoreError: It cannot be opened, is not greenllm's, is damaged, or went missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        marker = path.with_name(path.name + ".id")
        if not path.exists() and marker.exists():
            raise StoreError(
                f"{path} is missing, but this state directory had one ({marker} is there): "
                f"restore it from a backup, or delete {marker} to start an empty cluster"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open: {exc}") from None
        try:
            self._open()
            marker.write_text(
                f"greenllm controller state, schema {SCHEMA_VERSION}\n", encoding="utf-8"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(
                f"{path} is not a readable greenllm database ({exc}): move it aside and restore a "
                "backup, or delete it to start an empty cluster"
            ) from None
        except OSError as exc:
            self._db.close()
            raise StoreError(f"{path}: state directory not writable: {exc.strerror}") from None
        except StoreError:
            self._db.close()
            raise
        #: ``(st_dev, st_ino)`` of the file opened.
        self._identity = self._stat()
        #: Why the file can no longer be trusted (None: it can); every write is refused then.
        self.broken: str | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def check(self) -> None:
        """Make sure the file is still the one opened and still reads.

        Raises:
            StoreError: It was replaced, deleted or damaged (the store refuses writes from
                now on), or could not be checked now.
        """
        with self._lock:
            self._check_locked()

    def _check_locked(self) -> None:
        if self.broken is not None:
            raise StoreError(self.broken)
        problem = None
        identity = self._stat()
        if identity is None:
            problem = f"{self.path} is missing: it was deleted or moved while the controller ran"
        elif identity != self._identity:
            problem = f"{self.path} was replaced by another file while the controller ran"
        else:
            problem = self._quick_check()
        if problem is not None:
            self.broken = (
                f"{problem}; writes are refused: restore the database from a backup (or move "
                "it aside for an empty cluster) and restart the controller"
            )
            raise StoreError(self.broken)

    def _quick_check(self) -> str | None:
        """What is wrong with the file on disk (None: nothing): its header, then
        ``quick_check`` by a fresh connection (pages still in the write-ahead log are read
        from there, so the header is read from the file itself)."""
        try:
            with self.path.open("rb") as fh:
                header = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror}") from None
        if header and header != SQLITE_MAGIC:
            return f"{self.path} is damaged (its header is not SQLite's)"
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise _fail(self.path, exc) from None
        try:
            row = db.execute("PRAGMA quick_check").fetchone()
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
            if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                return f"{self.path} is damaged ({exc})"
            raise _fail(self.path, exc) from None
        finally:
            db.close()
        if row is None or row[0] != "ok":
            return f"{self.path} is damaged (quick_check: {row[0] if row else 'no answer'})"
        if app_id != APPLICATION_ID:
            return f"{self.path} is no longer greenllm's database (application id {app_id})"
        return None

    def _open(self) -> None:
        db = self._db
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(
                f"integrity check failed: {check[0] if check else 'no answer'}"
            )
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables and "jobs" not in tables):
            raise StoreError(
                f"{self.path} is another program's database (application id {app_id}, tables "
                f"{', '.join(sorted(tables)) or 'none'}): point state_dir elsewhere"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer greenllm (schema {version}, this one reads "
                f"up to {SCHEMA_VERSION}): upgrade greenllm"
            )
        db.execute("PRAGMA journal_mode=WAL")
        migrate(db, version)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- the Store port ------------------------------------------------------------------
    def load(self, recent_ended: int) -> Snapshot:
        """See :meth:`scheduler.shell.ports.Store.load`."""
        try:
            with self._lock:
                db = self._db
                settings = {
                    k: json.loads(v) for k, v in db.execute("SELECT key, value FROM settings")
                }
                rows = db.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE final = 0 OR job_id IN (SELECT job_id "
                    "FROM jobs WHERE final = 1 ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                    (recent_ended,),
                ).fetchall()
                gpus = db.execute(
                    "SELECT node, idx, gpu_type, min_w, max_w, limit_w, failsafe_w FROM gpus"
                ).fetchall()
                last_seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0]
            return Snapshot(
                settings, [_job(r) for r in rows], [StoredGpu(*g) for g in gpus], int(last_seq)
            )
        except (sqlite3.Error, ValueError, TypeError, IndexError) as exc:
            raise StoreError(f"{self.path}: cannot read its data: {exc}") from None

    def write(self, changes: Write, durable: bool) -> None:
        """See :meth:`scheduler.shell.ports.Store.write`."""
        with self._lock:
            if durable:  # an acknowledged change must land in a file that reads back
                self._check_locked()
            elif self.broken is not None:
                raise StoreError(self.broken)
            db = self._db
            try:
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                db.execute("BEGIN IMMEDIATE")
                try:
                    self._apply(db, changes)
                    db.execute("COMMIT")
                except BaseException:
                    # SQLite may have rolled back itself (a full disk): a second rollback's
                    # "no transaction is active" must not hide what happened
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._check_after_failure()  # the file gone, replaced or damaged says so
                raise _fail(self.path, exc) from None

    def _check_after_failure(self) -> None:
        """After a failed write: raise when the file is replaced, deleted or damaged (else
        the write's own error is the news)."""
        try:
            self._check_locked()
        except StoreError:
            if self.broken is not None:
                raise

    @staticmethod
    def _apply(db: sqlite3.Connection, changes: Write) -> None:
        db.executemany(
            "INSERT INTO settings(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in changes.settings.items()],
        )
        db.executemany(
            f"INSERT OR REPLACE INTO jobs({_JOB_COLUMNS}, updated_at_s) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    j.job_id,
                    j.seq,
                    j.spec_json,
                    j.phase,
                    j.reason,
                    j.submitted_at_s,
                    j.generation,
                    j.restarts,
                    json.dumps(
                        [[s.rank, s.generation, s.node, s.index, s.phase] for s in j.shards]
                    ),
                    j.energy_j,
                    j.work_units,
                    json.dumps(list(j.carried)),
                    json.dumps([[n, i, e] for (n, i), e in j.energy_start_j.items()]),
                    int(j.final),
                    j.ended_at_s,
                    time.time(),
                )
                for j in changes.jobs
            ],
        )
        db.executemany(
            "INSERT OR REPLACE INTO gpus(node, idx, gpu_type, min_w, max_w, limit_w, failsafe_w) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    g.node,
                    g.index,
                    g.gpu_type,
                    g.min_power_limit_w,
                    g.max_power_limit_w,
                    g.limit_w,
                    g.failsafe_w,
                )
                for g in changes.gpus
            ],
        )
        if changes.events:
            db.executemany(
                "INSERT INTO events(t_s, job_id, kind, message, entity, key, old) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.t_s, e.job_id, e.kind, e.message, e.entity, e.key, e.old)
                    for e in changes.events
                ],
            )
            db.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS,)
            )

    def events(self, job_id: str | None, limit: int) -> list[StoredEvent]:
        """See :meth:`scheduler.shell.ports.Store.events`."""
        query = "SELECT t_s, job_id, kind, message, entity, key, old FROM events"
        args: tuple[object, ...] = ()
        if job_id is not None:
            query += " WHERE job_id = ?"
            args = (job_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [StoredEvent(*r) for r in reversed(rows)]

    def ended_counts(self, exclude: set[str]) -> dict[str, int]:
        """See :meth:`scheduler.shell.ports.Store.ended_counts`.

        Raises:
            StoreError: The data cannot be read.
        """
        try:
            return self._ended_counts(exclude)
        except sqlite3.Error as exc:
            raise _fail(self.path, exc) from None

    def _ended_counts(self, exclude: set[str]) -> dict[str, int]:
        with self._lock:
            rows = (
                self._db.execute(
                    "SELECT job_id, state FROM jobs WHERE final = 1 AND job_id IN "
                    f"({', '.join('?' for _ in exclude)})",
                    tuple(exclude),
                ).fetchall()
                if exclude
                else []
            )
            counts = {
                str(state): int(n)
                for state, n in self._db.execute(
                    "SELECT state, COUNT(*) FROM jobs WHERE final = 1 GROUP BY state"
                )
            }
        for _, state in rows:
            counts[str(state)] -= 1
        return {k: v for k, v in counts.items() if v > 0}

    def jobs_page(self, offset: int, limit: int) -> tuple[list[StoredJob], int]:
        """See :meth:`scheduler.shell.ports.Store.jobs_page`."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return [_job(r) for r in rows], int(total)

    def job(self, job_id: str) -> StoredJob | None:
        """See :meth:`scheduler.shell.ports.Store.job`."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return _job(row) if row is not None else None
