"""The filesystem under a board: what kind of mount it is.

Why: a flock board on a mount where flock does not cross clients, or whose clients cache file sizes,
corrupts silently (issue 9 measured it on bindfs, sshfs and NFS). `fstype_of` is one read of
/proc/self/mountinfo, cheap enough for init, open and watchers to pick or check a strategy; what the
mount does when tried is `probe.py` (`blackboard doctor`).
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

Kind = Literal["local", "memory", "fuse", "network", "unknown"]

# fmt: off
_LOCAL = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "overlay", "jfs", "reiserfs", "nilfs2",
    "vfat", "exfat", "ntfs3", "hfsplus", "apfs", "udf", "iso9660", "squashfs", "erofs",
})
_MEMORY = frozenset({"tmpfs", "ramfs", "devtmpfs"})
# virtiofs speaks FUSE to a daemon on the VM's host, which may share the directory with others.
_FUSE = frozenset({"fuse", "fuseblk", "virtiofs"})
_NETWORK = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "9p", "glusterfs", "afs", "lustre", "gpfs", "beegfs", "ocfs2",
    "gfs2", "orangefs", "coda",
})
# fmt: on


def _kind(fstype: str) -> Kind:
    if fstype in _LOCAL:
        return "local"
    if fstype in _MEMORY:
        return "memory"
    if fstype in _FUSE or fstype.startswith("fuse."):
        return "fuse"
    if fstype in _NETWORK:
        return "network"
    return "unknown"


class MountInfo(NamedTuple):
    """The mount a path lives on, as /proc/self/mountinfo describes it ("" where unknown)."""

    mount_point: str
    fstype: str
    source: str
    #: The mount's options, then its superblock's (e.g. "rw,relatime,vers=4.2,...").
    options: str
    kind: Kind

    @property
    def network(self) -> bool:
        """Whether other clients may share this mount (FUSE, network, or a type we do not know),
        so that flock and change notifications may not reach them."""
        return self.kind not in ("local", "memory")


def _unescape(field: bytes) -> bytes:
    """mountinfo writes a space, tab, newline and backslash in a field as \\040, \\011, \\012, \\134."""
    if b"\\" not in field:
        return field
    first, *rest = field.split(b"\\")
    out = [first]
    for part in rest:
        code = part[:3]
        if len(code) == 3 and all(0x30 <= c <= 0x37 for c in code):
            out.append(bytes([int(code, 8)]) + part[3:])
        else:
            out.append(b"\\" + part)
    return b"".join(out)


def fstype_of(path: str | os.PathLike[str]) -> MountInfo:
    """The mount `path` lives on (a path that does not exist yet: its nearest existing ancestor's).

    Cheap, for init, open and watchers: one read of /proc/self/mountinfo, no subprocess. Of the
    mounts whose mount point is a prefix of the resolved path, those with the path's device (st_dev)
    win, and among them the longest prefix (a bind mount has its source's device but its own mount
    point), then the last listed (a mount over another). A btrfs subvolume's st_dev matches no line:
    then the longest prefix alone. Off Linux the kind is "unknown".
    """
    target = os.path.realpath(path)
    unknown = MountInfo("", "", "", "", "unknown")
    while True:
        try:
            device = os.stat(target).st_dev
            break
        except FileNotFoundError:
            parent = os.path.dirname(target)
            if parent == target:
                return unknown
            target = parent
        except OSError:
            return unknown
    try:
        with open("/proc/self/mountinfo", "rb") as file:
            data = file.read()
    except OSError:
        return unknown
    best: tuple[bool, int] | None = None
    found = unknown
    for line in data.splitlines():
        # ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
        fields = line.split(b" ")
        try:
            dash = fields.index(b"-", 6)
            major, minor = fields[2].split(b":")
            fstype, source, super_options = (os.fsdecode(_unescape(f)) for f in fields[dash + 1 : dash + 4])
            point = os.fsdecode(_unescape(fields[4]))
            same_device = os.makedev(int(major), int(minor)) == device
        except ValueError:
            continue
        if point not in ("/", target) and not target.startswith(point + "/"):
            continue
        rank = (same_device, len(point))
        if best is None or rank >= best:
            best = rank
            options = ",".join(dict.fromkeys([*os.fsdecode(fields[5]).split(","), *super_options.split(",")]))
            found = MountInfo(point, fstype, source, options, _kind(fstype))
    return found
