"""A board a group shares (`blackboard init --group NAME`, spec/TRUST.md 6): its directories owned by
the group, setgid (so every file and directory made in them later is the group's too) and
`rwxrws---`, with a default POSIX ACL of `u::rwx,g::rwx,o::---`, which every file created under
them later takes instead of the creating process's umask: a member whose umask is 022 or 077 still
makes files the others can write, and nobody else can read.
"""

from __future__ import annotations

import errno
import grp
import os
import struct
from pathlib import Path

from ..errors import InvalidValue

_ACL_XATTR = "system.posix_acl_default"
#: The xattr's binary form (linux/posix_acl_xattr.h): a version, then (tag, perm, id) entries in tag order.
_ACL_VERSION = 2
_USER_OBJ, _GROUP_OBJ, _OTHER = 0x01, 0x04, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
DIR_MODE = 0o2770
FILE_MODE = 0o660


def group_id(name: str) -> int:
    """The gid of group `name` (or of a number), or `InvalidValue` if there is no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise InvalidValue(f"no such group: {name!r} (see `getent group`)") from None


def default_acl() -> bytes:
    """`u::rwx,g::rwx,o::---` as the kernel's xattr bytes."""
    entries = ((_USER_OBJ, 7), (_GROUP_OBJ, 7), (_OTHER, 0))
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", t, p, _UNDEFINED_ID) for t, p in entries)


def share_directory(path: Path, gid: int) -> bool:
    """Give `path` (a directory) to group `gid`, setgid, `rwxrws---`, with the default ACL. Returns
    False if the filesystem keeps no POSIX ACLs (new files then get their creator's umask)."""
    os.chown(path, -1, gid)
    os.chmod(path, DIR_MODE)  # after chown: chown may clear the setgid bit
    try:
        os.setxattr(path, _ACL_XATTR, default_acl())
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA):
            return False
        raise
    return True


def share_file(path: Path, gid: int) -> None:
    """Give `path` (a file) to group `gid`, `rw-rw----`."""
    os.chown(path, -1, gid)
    os.chmod(path, FILE_MODE)
