"""The one exception hierarchy: every error the library raises derives from `BlackboardError`.

Leaves also inherit the matching builtin (`KeyError`, `ValueError`, `TimeoutError`, ...) so that
callers who catch builtins keep working, and they carry the data a caller needs to act. They pickle,
because they cross process boundaries (multiprocessing pools, `subscribe` callbacks).
"""

from __future__ import annotations

import errno as _errno
from typing import Any


class BlackboardError(Exception):
    """Base of every blackboard error. `str(err)` is one line a user can act on."""

    #: exit status of the CLI for this kind of error (documented in README and `--help`)
    exit_code = 1

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions with keyword-only data pickle their args by default; rebuild from __dict__ instead.
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[BlackboardError], message: str, state: dict[str, Any]) -> BlackboardError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class InvalidKey(BlackboardError, ValueError):
    """A key that is not allowed: it could escape the board, or it cannot be stored as a file name."""

    exit_code = 2

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class InvalidValue(BlackboardError, ValueError):
    """A value that is not plain JSON (NaN, a tuple, a set, ...) or is larger than the board allows."""

    exit_code = 2

    def __init__(self, reason: str, key: str | None = None) -> None:
        where = f" for key {key!r}" if key is not None else ""
        super().__init__(f"invalid value{where}: {reason}")
        self.key = key
        self.reason = reason


class NotABoard(BlackboardError, FileNotFoundError):
    """The directory is not a board (no `board.json`), or it is a board of a newer format."""

    exit_code = 5

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class KeyNotFound(BlackboardError, KeyError):
    """The key has no live value."""

    exit_code = 3

    def __init__(self, key: str, *, at: int | None = None) -> None:
        super().__init__(f"no such key: {key!r}" + ("" if at is None else f" at seq {at}"))
        self.key = key
        #: the seq of an as-of read (`board.get(key, at=...)`) the key had no value at, else None
        self.at = at

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message again.
        return str(self.args[0])


class UnknownAgent(KeyNotFound):
    """A message to an agent that never joined the board (or a broadcast that reaches nobody): refused,
    so that a typo does not vanish into an inbox no one reads. Names the closest registered agents."""

    def __init__(self, name: str, close: list[str] | None = None, *, reason: str | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.close = close or []
        hint = f"; did you mean {', '.join(self.close)}?" if self.close else ""
        self.args = (reason or f"no such agent: {name!r} (it never joined this board{hint})",)


class NoSuchMessage(KeyNotFound):
    """No message of this id waits in this agent's inbox (never sent to it, or acked already)."""

    def __init__(self, agent: str, message_id: str) -> None:
        super().__init__(f"inbox/{agent}/{message_id}")
        self.agent = agent
        self.message_id = message_id
        self.args = (f"no message {message_id} in {agent}'s inbox (acked already, or never sent to {agent})",)


class TimedOut(BlackboardError, TimeoutError):
    """A request or a call got no answer before its deadline (CLI exit 7, like a watch that timed out)."""

    exit_code = 7


class Refused(BlackboardError):
    """The layer said no, and wrote nothing: a turn past a conversation's limit, a closed
    conversation, a speaker who is not a participant, a rejected call, an accept of a call that no
    longer rings (CLI exit 9)."""

    exit_code = 9


class VersionConflict(BlackboardError):
    """Compare-and-set failed: the key's current version is not the expected one. Nothing was written."""

    exit_code = 4

    def __init__(self, key: str, expected: int, actual: int) -> None:
        state = "absent" if actual == 0 else f"at version {actual}"
        want = "absent" if expected == 0 else f"version {expected}"
        super().__init__(f"version conflict on {key!r}: expected {want}, but it is {state}")
        self.key = key
        self.expected = expected
        self.actual = actual


class Fenced(BlackboardError):
    """A fenced write (spec/FORMAT.md section 8, step 5): the fence key changed since the fence was
    taken (a newer lease was granted, a newer delivery made). Nothing was written."""

    exit_code = 11

    def __init__(self, key: str, expected_seq: int, actual_seq: int, what: str | None = None) -> None:
        now = "has no live value" if actual_seq == 0 else f"was changed at seq {actual_seq}"
        super().__init__(
            what or f"fenced: {key!r} {now}, after the fence of seq {expected_seq} was taken: nothing was written"
        )
        self.key = key
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class Held(BlackboardError):
    """A lease is held by someone else (exit 10): who, and when it expires if not renewed."""

    exit_code = 10

    def __init__(self, key: str, holder: str, expires: str, token: int) -> None:
        super().__init__(f"{key!r} is held by {holder} (token {token}) until {expires} unless renewed")
        self.key = key
        self.holder = holder
        self.expires = expires
        self.token = token


class ContractViolation(BlackboardError, ValueError):
    """A write the board's rules refuse (spec/TRUST.md): a value that breaks its prefix's schema, an
    author not among the prefix's writers, a value over its size limit, an unsigned write where
    signatures are required. Nothing was written (CLI exit 12)."""

    exit_code = 12

    def __init__(self, key: str, prefix: str, rule: str, reason: str, path: str = "") -> None:
        where = f" at {path}" if path else ""
        super().__init__(f"refused by the contract on {prefix!r}: {key!r}{where}: {reason} (rule {rule})")
        self.key = key
        #: the contract's prefix
        self.prefix = prefix
        #: which rule: `schema/<path in the schema>`, `writers`, `max_bytes`, `signed`, `contracts`
        self.rule = rule
        self.reason = reason
        #: where in the value (a JSON path like `$.answer`), for a schema rule
        self.path = path


class Unverified(BlackboardError):
    """A record a reader required to be signed (`verified=True`, `--verified`) is unsigned, or its
    signature does not verify (spec/TRUST.md section 4). CLI exit 12."""

    exit_code = 12

    def __init__(self, seq: int, key: str, author: str, reason: str) -> None:
        super().__init__(f"seq {seq} ({key!r} by {author!r}) is not verified: {reason}")
        self.seq = seq
        self.key = key
        self.author = author
        self.reason = reason


class LockTimeout(BlackboardError, TimeoutError):
    """The writer lock could not be taken in time. `holder` names who holds it, when the lock can
    tell (a soft lock's token: "pid N on host H (...)"), else None."""

    def __init__(self, lock_path: str, timeout: float, holder: str | None = None) -> None:
        board = _board_of(lock_path)
        if holder is None:
            why = (
                "another writer holds it; on a soft-lock board `blackboard --board "
                f"{board} unlock` shows the holder (--force breaks its hold: only if that writer is dead)"
            )
        else:
            # A dead holder on this host is broken at once; one on another host once its lease runs out.
            why = (
                f"held by {holder}; a holder on another host is broken once it has not renewed its hold for "
                f"15 s; if that process is known dead, `blackboard --board {board} unlock --force` breaks it now"
            )
        super().__init__(f"could not take the writer lock {lock_path} within {timeout:g} s ({why})")
        self.lock_path = lock_path
        self.timeout = timeout
        self.holder = holder


class LockLost(BlackboardError):
    """This process's hold on a soft writer lock was broken while it held it (it did not renew for
    the lease: a paused process, a server away): another writer may hold it now, so nothing was
    written (spec 9.1)."""

    def __init__(self, lock_path: str) -> None:
        super().__init__(
            f"{lock_path}: this process's hold on the writer lock was broken before it could write (no renewal "
            "for 15 s: was it paused?); nothing was written; retry"
        )
        self.lock_path = lock_path


class StaleView(BlackboardError):
    """Under the writer lock, this client's fresh view of the log stayed behind what the previous
    holder left (a network or FUSE filesystem serving cached data), or the file did not end where
    the view did: appending would overwrite or reuse a seq, so nothing was written."""

    def __init__(
        self, path: str, seen_seq: int, seen_end: int, note_seq: int | None = None, note_end: int | None = None
    ) -> None:
        if note_seq is None:
            what = (
                f"{path}: this client's view of the log ends after seq {seen_seq} at byte {seen_end}, but the "
                "file does not end there (another writer appended meanwhile, or the file changed)"
            )
        else:
            what = (
                f"{path}: this client sees the log up to seq {seen_seq} ({seen_end} bytes), but the last writer "
                f"left it at seq {note_seq} ({note_end} bytes): the filesystem serves stale data to this client "
                "(attribute or page caching)"
            )
        super().__init__(
            f"{what}, so nothing was written; mount it with attribute caching off (`blackboard doctor DIR` "
            "shows what the mount does); if the log was restored from an older copy, `blackboard repair` "
            "goes on from it"
        )
        self.path = path
        self.seen_seq, self.seen_end, self.note_seq, self.note_end = seen_seq, seen_end, note_seq, note_end


class ReadOnlyBoard(BlackboardError, PermissionError):
    """The board cannot be written by this process (read-only handle, permissions, read-only mount)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: board is read-only here: {reason}")
        self.path = path
        self.reason = reason


class CorruptLog(BlackboardError):
    """A complete line of the log is not a valid record (bad JSON, a checksum that does not match, a
    seq out of order): stop rather than skip data. `blackboard repair` quarantines it."""

    def __init__(
        self,
        path: str,
        offset: int,
        reason: str,
        *,
        seq: int | None = None,
        line: int | None = None,
        advice: str | None = None,
    ) -> None:
        where = f"line {line}, byte {offset}" if line is not None else f"byte {offset}"
        if seq is not None:
            where += f" (seq {seq})"
        if advice is None:
            advice = f"run `blackboard --board {_board_of(path)} repair` to quarantine it and go on"
        super().__init__(f"{path}: corrupt record at {where}: {reason}; {advice}")
        self.advice = advice
        self.path = path
        self.offset = offset
        self.reason = reason
        #: the seq the record claims (it may itself be damaged), if one could be read
        self.seq = seq
        #: the 1-based line number in the file, if it was counted
        self.line = line

    def numbered(self, line: int) -> CorruptLog:
        """The same error, naming the line too (counted by whoever has the file open)."""
        if self.line is not None or type(self) is not CorruptLog:
            return self
        return CorruptLog(self.path, self.offset, self.reason, seq=self.seq, line=line, advice=self.advice)


class LogTruncated(CorruptLog):
    """The log ends before a seq that a durable trace (the watermark, a checkpoint, an entry file, a
    quarantine) proves was written: it lost its tail. Nothing is written until a repair continues it
    after that seq, so that no seq is ever assigned twice."""

    def __init__(self, path: str, offset: int, last_seq: int, seen: int, trace: str) -> None:
        reason = f"the log ends at seq {last_seq}, but {trace} shows seq {seen} was written"
        BlackboardError.__init__(
            self,
            f"{path}: {reason}: it lost its tail (cut, or restored from an older copy); nothing is written "
            f"to it. Run `blackboard --board {_board_of(path)} repair` to go on after seq {seen} (it "
            "recovers what the entry files still hold)",
        )
        self.path, self.offset, self.reason, self.seq, self.line = path, offset, reason, None, None
        self.advice = ""
        self.last_seq = last_seq
        self.seen = seen
        self.trace = trace


def _board_of(path: str) -> str:
    """The board a file of it belongs to: its directory, or that directory's parent for the board's
    subdirectories (an archive segment, a cursor, a temp file)."""
    import os

    parent = os.path.dirname(path) or "."
    if os.path.basename(parent) in ("archive", "cursors", "tmp", "quarantine"):
        return os.path.dirname(parent) or "."
    return parent


class LogGone(BlackboardError, FileNotFoundError):
    """The log file this handle had open was deleted (nothing more is written to it: an append to the
    unlinked file would be acknowledged and lost), or the board has none (`while_open` False)."""

    def __init__(self, path: str, *, while_open: bool = True) -> None:
        what = (
            "the log file is gone (deleted while this process had it open); nothing more is written to it"
            if while_open
            else "the board has no log file (deleted, or a partial copy of the board)"
        )
        super().__init__(
            f"{path}: {what}. Restore it from a copy, or run `blackboard --board {_board_of(path)} repair`: "
            "a new log that goes on after every seq the entry files show, with the values they hold"
        )
        self.path = path
        self.while_open = while_open


class Compacted(BlackboardError):
    """A watch or cursor started before history that compaction has removed, deletes included."""

    def __init__(self, requested: int, purged_through: int, *, reason: str | None = None) -> None:
        super().__init__(
            f"seq {requested}: {reason}"
            if reason
            else f"events after seq {requested} were compacted away (deletes up to seq {purged_through} are "
            "gone); read the current state and watch from `since=None`, or from a later seq"
        )
        self.requested = requested
        self.purged_through = purged_through


def open_or_read_only(path: str, flags: int, what: str) -> int:
    """`os.open`, with "no write permission" and "read-only filesystem" as `ReadOnlyBoard`."""
    import errno
    import os

    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o666)
    except PermissionError:
        raise ReadOnlyBoard(os.path.dirname(path), f"cannot open {what}") from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise ReadOnlyBoard(os.path.dirname(path), "read-only filesystem") from None
        raise


#: The errnos of a write that stopped for lack of room, and how a user is told (with what to check).
NO_ROOM: dict[int, str] = {
    _errno.ENOSPC: "no space left on device",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EFBIG: "file too large (RLIMIT_FSIZE, or the filesystem's largest file)",
}


class OutOfSpace(BlackboardError, OSError):
    """A write stopped for lack of room: a full filesystem (ENOSPC), a quota (EDQUOT), or a file that
    would pass the process's file-size limit (EFBIG: RLIMIT_FSIZE, `ulimit -f`). `errno` is the real
    one. What the write had put down was undone; `outcome` says what that left (by default nothing).

    >>> str(OutOfSpace("b/log.jsonl", 28))
    'b/log.jsonl: no space left on device (nothing was written)'
    """

    def __init__(self, path: str, errno: int, outcome: str = "nothing was written") -> None:
        import os

        OSError.__init__(self, errno, os.strerror(errno), path)
        reason = NO_ROOM.get(errno) or os.strerror(errno).lower()
        # "file too large (RLIMIT_FSIZE, ...)" + outcome: one pair of parentheses, not two.
        detail = f"{reason[:-1]}; {outcome})" if reason.endswith(")") else f"{reason} ({outcome})"
        self.message = f"{path}: {detail}"
        self.path = path
        self.outcome = outcome

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError keeps errno and filename in C slots, which BlackboardError's __reduce__ would lose.
        return (type(self), (self.path, self.errno, self.outcome))
