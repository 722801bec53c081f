"""The checkpoint: a snapshot of the index at a log offset, so that opening a board costs the changes
made since the snapshot, not the whole history (spec/FORMAT.md section 7.2).

It is implementation state: a reader in another language may ignore it, and nothing is lost
without it. It is never trusted blindly: it names the log file it describes (the header line, whose
random generation changes with every new log file) and the seq of the record that ends at its offset,
and carries a CRC of its body. A checkpoint that is missing, torn, corrupt, of another format, of
another log file, or whose offset does not end the record it names is ignored, and the log is
replayed from its start. It is written to tmp/ and renamed into place (a reader sees an old one or
a new one), not fsynced: after a power loss the CRC or the offset check fails and the log is replayed.

    line 1: {"blackboard_checkpoint":1,"log_header":"<the log's first line>","offset":O,
             "last_record_seq":S,"records":N,"first_seq":F,"last_line_crc32":L,"authors":[...],
             "crc32":X}   (X: of the whole file as if "crc32" were not in it; L: of the line ending at O)
    line 2: [[key, seq, version, op, author, ts, txn, value], ...]   op 1 = put, 0 = delete;
            author an index into "authors"; txn 0/1; value the value's JSON, as a string
    line 3: [[idempotency key, seq, offset], ...]
"""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import TYPE_CHECKING, Any

from ..errors import CorruptLog
from . import codec as _codec
from .index import Index, Slot
from .layout import write_all
from .lock import side_lock
from .record import DELETE, PUT, fast_seq, parse_record

if TYPE_CHECKING:
    from .layout import Layout
    from .log import LogFile

FORMAT = 1
_KEY = "blackboard_checkpoint"


def load(layout: Layout, log: LogFile, carry: Index | None = None) -> Index | None:
    """The index the checkpoint holds for `log`'s file, with `log.offset` moved to its offset; None
    (and `log` untouched) if there is no checkpoint valid for that file.

    `carry`: this handle's index of the log file compaction just replaced. If it had read at least
    up to the new file's compacted prefix, it already holds the state the new file holds (compaction
    keeps every key's state and every seq), so it is kept, with the new file's counts, and only the
    records it lacks are read: a switch then costs no reload of every key.
    """
    try:
        data = layout.checkpoint.read_bytes()
    except OSError:
        return None
    try:
        found = _check(data, log)
        if found is None:
            return None
        head, body = found
        return (carry is not None and _carry(carry, head, body, log)) or _load(head, body, log)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, _codec.DecodeError, CorruptLog):
        return None  # torn, corrupt or foreign: replay instead


def seen_seq(layout: Layout) -> int:
    """The last seq of the log file a whole checkpoint was written for, whichever file that was (0 if
    there is none, or it is torn): a durable trace that seqs up to it were used (spec 5.3)."""
    try:
        whole = _whole(layout.checkpoint.read_bytes())
        seq = whole[0]["last_record_seq"] if whole is not None else 0
    except (OSError, ValueError, TypeError, KeyError, _codec.DecodeError):
        return 0
    return seq if type(seq) is int else 0


def _whole(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The head and body of a checkpoint of our format whose CRC matches (checks 1 and 2 of spec 7.2)."""
    first = data.find(b"\n")
    head = _codec.decode(data[:first])
    if not isinstance(head, dict) or head.get(_KEY) != FORMAT:
        return None
    body = data[first + 1 :]
    if crc_of(data[:first], body) != head["crc32"]:
        return None
    return head, body


def _check(data: bytes, log: LogFile) -> tuple[dict[str, Any], bytes] | None:
    """The checkpoint's head and body if it is whole and describes `log`'s file as it is."""
    whole = _whole(data)
    if whole is None:
        return None
    head, body = whole
    header = log.read_header()
    if not header.line or head["log_header"] != header.line.decode():
        return None
    offset, last_seq = head["offset"], head["last_record_seq"]
    if type(offset) is not int or type(last_seq) is not int or os.fstat(log.fd).st_size < offset:
        return None
    if offset < len(header.line) + 1 or (head["records"] == 0) != (offset == len(header.line) + 1):
        return None
    # The record ending at the offset, byte for byte: a log that lost its tail (a power loss on a
    # board without fsync) and grew back to the same size with other records is not the same log.
    if head["records"]:
        line = line_ending_at(log, offset)
        if zlib.crc32(line) != head["last_line_crc32"]:
            return None
        seq = fast_seq(line)
        if seq is None:
            seq = parse_record(log.path, offset - len(line) - 1, line, sealed=log.sealed)["seq"]
        if seq != last_seq:
            return None
    return head, body


def _load(head: dict[str, Any], body: bytes, log: LogFile) -> Index | None:
    slots_line, _, idem_line = body.partition(b"\n")
    authors, records, first_seq = head["authors"], head["records"], head["first_seq"]
    if type(records) is not int or records < 0 or type(first_seq) is not int or type(authors) is not list:
        return None
    if not all(type(a) is str for a in authors):
        return None
    index = Index(log.read_header().compacted_through)
    slots = index.slots
    live = []
    for key, seq, version, op, author, ts, txn, value in _codec.decode(slots_line):
        # Every field's type (~0.2 us a row): a checkpoint is never trusted blindly, even with its CRC.
        if not (
            type(key) is str
            and type(seq) is int
            and type(version) is int
            and type(op) is int
            and op in (0, 1)
            and type(author) is int
            and author >= 0
            and type(ts) is str
            and type(txn) is int
            and txn in (0, 1)
            and type(value) is str
        ):
            return None
        slots[key] = Slot(seq, version, PUT if op else DELETE, value.encode(), authors[author], ts, bool(txn))
        if op:
            live.append(key)
    live.sort()
    index.live = live
    idem = _idem(idem_line)
    if idem is None:
        return None
    index.idem = idem
    index.last_record_seq, index.records, index.first_seq = head["last_record_seq"], records, first_seq
    log.offset = head["offset"]
    return index


def _idem(line: bytes) -> dict[str, tuple[int, int]] | None:
    out = {}
    for idem, seq, where in _codec.decode(line):
        if type(idem) is not str or type(seq) is not int or type(where) is not int:
            return None
        out[idem] = (seq, where)
    return out


#: A carried index reads at most this many MiB past the checkpoint's offset before giving up on it.
_CARRY = 64


def _carry(index: Index, head: dict[str, Any], body: bytes, log: LogFile) -> Index | None:
    compacted_through = log.read_header().compacted_through
    have, last = index.last_record_seq, head["last_record_seq"]
    # Behind the compacted prefix, the records we lack may be gone: load the checkpoint instead.
    # (The checkpoint covers the kept records, all at or below the compacted prefix: last <= it.)
    if have < compacted_through or last > have:
        return None
    idem = _idem(body.partition(b"\n")[2])
    if idem is None or type(head["records"]) is not int or type(head["first_seq"]) is not int:
        return None
    # Records after the checkpoint's offset that we have read already (copied at the switch, seq <=
    # what we have): pass over them by their seqs, noting where those with idempotency keys now
    # are. Not by counting: seqs between the last kept record and the compacted prefix are gone.
    passed = _pass_over(log, head["offset"], have, idem)
    if passed is None:
        return None
    start, skipped = passed
    # Deletes whose tombstones compaction removed are not in the new file: drop them, as a handle
    # that loads the new file would not have them (they are all at or below the purge mark, and
    # entry files reflect them already: compaction removes only tombstones they reflect).
    purged = log.read_header().purged_deletes_through
    for key in [k for k, slot in index.slots.items() if slot.op == DELETE and slot.seq <= purged]:
        del index.slots[key]
    index.compacted_through = compacted_through
    index.records = head["records"] + skipped
    index.first_seq = head["first_seq"]
    index.idem = idem
    log.offset = start
    return index


def _pass_over(log: LogFile, offset: int, have: int, idem: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    """From `offset`, the offset of the first complete line whose seq is above `have`, and how many
    lines were passed over; the idempotency keys of those lines are recorded in `idem`."""
    skipped = 0
    for _ in range(_CARRY):
        data = os.pread(log.fd, 1 << 20, offset)
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            line = data[pos:nl]
            seq = fast_seq(line)
            rec = None
            if seq is None or b'"idem":' in line:
                rec = parse_record(log.path, offset + pos, line, sealed=log.sealed)
                seq = rec["seq"]
            if seq > have:
                return offset + pos, skipped
            if rec is not None and "idem" in rec:
                idem[rec["idem"]] = (seq, offset + pos)
            pos = nl + 1
            skipped += 1
        if pos == 0:
            if len(data) == 1 << 20:
                return None  # a line longer than we read: let a full load deal with it
            return offset, skipped  # the end (or a line in progress): refresh goes on from here
        offset += pos
    return None


_CRC_FIELD = b',"crc32":'


def crc_of(head_line: bytes, body: bytes) -> int:
    """The CRC-32 a checkpoint's `crc32` (line 1's last member) holds: of the whole file as if that
    member were not in it (line 1 up to `,"crc32":`, then `}`, its newline, lines 2 and 3), so that
    line 1 is covered too. -1 if line 1 does not end with the member."""
    at = head_line.rfind(_CRC_FIELD)
    if at < 0:
        return -1
    return zlib.crc32(head_line[:at] + b"}\n" + body)


def line_ending_at(log: LogFile, offset: int) -> bytes:
    """The line whose newline is the byte before `offset` (without it); b"" if none ends there."""
    span = 1 << 12
    while True:
        start = max(0, offset - span)
        data = os.pread(log.fd, offset - start, start)
        if not data.endswith(b"\n"):
            return b""
        begin = data.rfind(b"\n", 0, len(data) - 1) + 1
        if begin == 0 and start > 0:
            span *= 8
            continue
        return data[begin:-1]


class View:
    """A copy of what a checkpoint holds of an index (two dict copies, ~0.3 ms for 10,000 keys), so
    that encoding it (~0.5 us a key) needs no lock while writers go on."""

    def __init__(self, index: Index) -> None:
        self.slots = dict(index.slots)
        self.idem = dict(index.idem)
        self.last_record_seq, self.records, self.first_seq = index.last_record_seq, index.records, index.first_seq


def encode(index: Index | View, header_line: bytes, offset: int, last_line: bytes) -> bytes:
    """The checkpoint of `index`, which reflects the log file with that header up to `offset`,
    where `last_line` (without its newline) ends."""
    authors: dict[str, int] = {}
    rows = [
        [
            key,
            s.seq,
            s.version,
            1 if s.op == PUT else 0,
            authors.setdefault(s.author, len(authors)),
            s.ts,
            1 if s.txn else 0,
            s.value.decode(),
        ]
        for key, s in index.slots.items()
    ]
    body = _codec.dumps(rows) + b"\n" + _codec.dumps([[k, seq, at] for k, (seq, at) in index.idem.items()]) + b"\n"
    head: dict[str, Any] = {
        _KEY: FORMAT,
        "log_header": header_line.decode(),
        "offset": offset,
        "last_record_seq": index.last_record_seq,
        "records": index.records,
        "first_seq": index.first_seq,
        "last_line_crc32": zlib.crc32(last_line),
        "authors": list(authors),
    }
    line = _codec.dumps(head)
    return line[:-1] + b',"crc32":%d}\n' % zlib.crc32(line + b"\n" + body) + body


def _describes_current_log(layout: Layout, data: bytes) -> bool:
    try:
        head = _codec.decode(data[: data.index(b"\n")])
        with open(layout.log, "rb") as f:
            first = f.readline(1 << 16)
    except (OSError, ValueError, _codec.DecodeError):
        return False
    return isinstance(head, dict) and first.rstrip(b"\n").decode(errors="replace") == head.get("log_header")


def save(layout: Layout, data: bytes, *, current_log_only: bool = True) -> int:
    """Replace the checkpoint with `data` (atomically). Returns its size; 0 if it could not be written
    here (read-only board, disk full): it is a cache, so that is no error, and nothing is left behind.

    `current_log_only`: not while a compaction runs, nor if the log at the path is no longer the
    file `data` describes: compaction's checkpoint of the log it switches in must not be replaced by
    one that no open can use. Compaction itself saves with it False, before its switch."""
    tmp = None
    try:
        layout.tmp.mkdir(exist_ok=True)
        tmp = layout.tmp_file("checkpoint")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            write_all(fd, data, layout.checkpoint)  # every byte or an error: never a short checkpoint
        finally:
            os.close(fd)
        if current_log_only:
            # Not while a compaction runs (it holds compact.lock from its checkpoint to its switch:
            # one saved in between would describe the log it is about to replace), and only for
            # the file at the path.
            with side_lock(layout.root / "compact.lock", wait=False) as free:
                if not free or not _describes_current_log(layout, data):
                    os.unlink(tmp)
                    return 0
                os.replace(tmp, layout.checkpoint)
        else:
            os.replace(tmp, layout.checkpoint)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return 0
    return len(data)
