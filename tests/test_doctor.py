"""`fstype_of` and `probe` (blackboard.core.mount) and `blackboard doctor`, on real mounts.

A tmpfs (and a bind mount) made in the test stands for "another filesystem": mounting needs root
(CAP_SYS_ADMIN), and those tests skip, saying so, where it is not allowed. FUSE and NFS views are the
shared-filesystem suite's (tests/test_sharedfs.py). No timing: a lag is asserted only where one mount
makes it certain (0 stale looks), or as found within the cap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from blackboard.cli import cli
from blackboard.core import mount
from blackboard.core import probe as probes
from blackboard.core.mount import fstype_of
from blackboard.core.probe import MountReport, probe

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/mountinfo (Linux)")

LOCAL_PROBES = [
    "flock",
    "fcntl",
    "o_excl",
    "rename_file",
    "rename_dir_empty",
    "rename_dir_nonempty",
    "rename_missing",
    "hard_link",
    "notify",
    "attr_lag",
]
REPORT_KEYS = {
    "path",
    "peer",
    "mount",
    "peer_mount",
    "network",
    "safe_for_flock",
    "lock",
    "watch",
    "poll_interval",
    "probes",
    "warnings",
    "cannot_prove",
}

Mount = Callable[..., Path]


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mount]:
    """`mounted(NAME, *mount_args)`: mount on a new directory tmp_path/NAME; all unmounted at teardown."""
    done: list[Path] = []

    def make(name: str, *args: str) -> Path:
        where = tmp_path / name
        where.mkdir(exist_ok=True)
        proc = subprocess.run(["mount", *args, str(where)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"mount {' '.join(args)} is not permitted here (needs root): {proc.stderr.strip()}")
        done.append(where)
        return where

    try:
        yield make
    finally:
        for where in reversed(done):
            if subprocess.run(["umount", str(where)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], check=False)


def tmpfs(mounted: Mount, name: str = "tmpfs", *options: str) -> Path:
    return mounted(name, "-t", "tmpfs", *(["-o", ",".join(options)] if options else []), "none")


def findmnt(path: Path) -> dict[str, str]:
    """util-linux's own answer: the filesystem type and mount point holding `path`."""
    proc = subprocess.run(
        ["findmnt", "-n", "-P", "-o", "FSTYPE,TARGET", "--target", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"findmnt is not usable here: {proc.stderr.strip()}")
    fields = dict(part.split("=", 1) for part in proc.stdout.split(" ", 1))
    # -P quotes each value and writes unusual bytes as \xHH.
    return {k: v.strip().strip('"').encode().decode("unicode_escape") for k, v in fields.items()}


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# -- fstype_of ---------------------------------------------------------------------------------------


def test_fstype_of_tmp_path_is_what_findmnt_says(tmp_path: Path) -> None:
    info = fstype_of(tmp_path)
    expected = findmnt(tmp_path)
    assert (info.fstype, info.mount_point) == (expected["FSTYPE"], expected["TARGET"])
    assert info.kind == mount._kind(info.fstype)
    assert info.source and info.options


def test_a_tmpfs_is_memory(mounted: Mount) -> None:
    where = tmpfs(mounted)
    (where / "sub").mkdir()
    for path in (where, where / "sub", where / "sub" / "not-yet"):  # a missing path: its parent's mount
        info = fstype_of(path)
        assert (info.mount_point, info.fstype, info.source, info.kind) == (str(where), "tmpfs", "none", "memory")
        assert not info.network


def test_a_mount_point_with_a_space_tab_and_backslash(mounted: Mount) -> None:
    where = tmpfs(mounted, "a b\tc\\d")  # mountinfo writes them as \040, \011, \134
    assert fstype_of(where / "x").mount_point == str(where)
    assert fstype_of(where).fstype == "tmpfs"


def test_a_bind_mount_is_its_own_mount_point_on_its_sources_filesystem(tmp_path: Path, mounted: Mount) -> None:
    source = tmp_path / "source"
    source.mkdir()
    view = mounted("view", "--bind", str(source))
    info = fstype_of(view)
    assert info.mount_point == str(view)
    assert info.fstype == fstype_of(source).fstype
    # A mount over part of a tmpfs: the longer mount point with the path's device wins.
    outer = tmpfs(mounted, "outer")
    inner = mounted("outer/inner", "--bind", str(source))
    assert fstype_of(inner).mount_point == str(inner)
    assert fstype_of(outer / "elsewhere").mount_point == str(outer)


@pytest.mark.parametrize(
    ("fstype", "kind"),
    [
        ("ext4", "local"),
        ("xfs", "local"),
        ("btrfs", "local"),
        ("overlay", "local"),
        ("tmpfs", "memory"),
        ("ramfs", "memory"),
        ("fuse", "fuse"),
        ("fuse.sshfs", "fuse"),
        ("fuseblk", "fuse"),
        ("virtiofs", "fuse"),
        ("nfs", "network"),
        ("nfs4", "network"),
        ("cifs", "network"),
        ("smb3", "network"),
        ("ceph", "network"),
        ("9p", "network"),
        ("lustre", "network"),
        ("something-new", "unknown"),
    ],
)
def test_kinds(fstype: str, kind: str) -> None:
    assert mount._kind(fstype) == kind
    assert mount.MountInfo("/", fstype, "x", "rw", mount._kind(fstype)).network == (kind not in ("local", "memory"))


def test_unescape() -> None:
    assert mount._unescape(b"/a\\040b\\011c\\012d\\134e") == b"/a b\tc\nd\\e"
    assert mount._unescape(b"/plain") == b"/plain"


# -- probe ---------------------------------------------------------------------------------------------


def check_one_mount(report: MountReport, where: Path) -> None:
    """What any local or memory filesystem must show, and the scratch directory gone."""
    assert [p.name for p in report.probes] == LOCAL_PROBES
    assert all(p.ok for p in report.probes), [p for p in report.probes if not p.ok]
    assert (report.lock, report.watch, report.poll_interval) == ("flock", "notify", None)
    assert report.safe_for_flock and not report.network
    assert report.warnings == ()
    # One mount, one kernel: the helper's append is visible to the very first fresh open.
    lag = report.result("attr_lag")
    assert lag is not None and lag.samples == 0 and lag.seconds == 0
    assert "cannot show" in report.cannot_prove and "soft" in report.cannot_prove
    assert listing(where) == ["keep"]


def test_probe_on_tmp_path(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    report = probe(tmp_path)
    assert report.path == str(tmp_path.resolve())
    assert report.mount == fstype_of(tmp_path)
    if report.mount.kind not in ("local", "memory"):
        pytest.skip(f"tmp_path is on {report.mount.fstype} ({report.mount.kind}): not a local disk")
    check_one_mount(report, tmp_path)


def test_probe_on_a_tmpfs(mounted: Mount) -> None:
    where = tmpfs(mounted)
    (where / "keep").write_text("mine")
    report = probe(where)
    assert report.mount.kind == "memory"
    check_one_mount(report, where)


@pytest.mark.parametrize("peer", ["itself", "bind mount"])
def test_a_peer_on_the_same_filesystem_shares_everything(tmp_path: Path, mounted: Mount, peer: str) -> None:
    where = tmp_path / "dir"
    where.mkdir()
    other = where if peer == "itself" else mounted("view", "--bind", str(where))
    report = probe(where, peer=other)
    assert report.peer == str(other)
    assert report.peer_mount == fstype_of(other)
    if report.mount.kind not in ("local", "memory"):
        pytest.skip(f"tmp_path is on {report.mount.fstype}: not a local disk")
    assert all(p.ok for p in report.probes), [p for p in report.probes if not p.ok]
    assert [p.name for p in report.probes] == LOCAL_PROBES + list(probes.PEER_PROBES)
    for name in ("peer_lag", "peer_lag_reverse"):
        lag = report.result(name)
        assert lag is not None and lag.samples == 0
    assert report.lock == "flock" and report.watch == "notify"
    assert "DIR against PEER" in report.cannot_prove
    assert listing(where) == []


def test_a_peer_that_is_another_directory_is_reported_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    report = probe(tmp_path / "a", peer=tmp_path / "b", timeout=0.2)
    same = report.result("peer_same_file")
    assert same is not None and not same.ok
    for name in probes.PEER_PROBES[1:]:
        skipped = report.result(name)
        assert skipped is not None and not skipped.ok and skipped.detail.startswith("skipped")
    assert report.lock == "soft"  # nothing showed that a flock crosses to PEER
    assert any("not a mount of the same directory" in w for w in report.warnings)
    assert listing(tmp_path / "a") == listing(tmp_path / "b") == []


def test_probe_refuses_what_is_not_a_writable_directory(tmp_path: Path, mounted: Mount) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        probe(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        probe(tmp_path, peer=tmp_path / "missing")
    read_only = tmpfs(mounted, "ro", "ro")
    with pytest.raises(OSError, match="Read-only"):
        probe(read_only)


def test_the_scratch_directory_goes_even_when_a_probe_is_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(_scratch: Path) -> probes.Probe:
        raise KeyboardInterrupt

    monkeypatch.setattr(probes, "_hard_link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        probe(tmp_path)
    assert listing(tmp_path) == []


def test_fstype_of_imports_nothing_more() -> None:
    """Open and watchers call it: it must not pull in what `probe` needs (subprocess, watchfiles)."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "from blackboard.core.mount import fstype_of; fstype_of('.')\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "blackboard.core.mount" in out.split()
    assert not {"blackboard.core.probe", "subprocess", "multiprocessing", "watchfiles"} & set(out.split())


# -- the command -------------------------------------------------------------------------------------


def doctor(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="blackboard")


def error_line(result: Result, code: int) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blackboard: error: "), result.stderr
    return lines[0]


def test_doctor_prints_a_line_per_probe_and_the_recommendation(tmp_path: Path) -> None:
    result = doctor("doctor", str(tmp_path))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    info = fstype_of(tmp_path)
    assert lines[0] == f"{tmp_path.resolve()}: {info.fstype} on {info.mount_point} ({info.source}), {info.kind}"
    for name, line in zip(LOCAL_PROBES, lines[1:], strict=False):
        assert line.split()[:2] in ([name, "ok"], [name, "no"]), line
    assert any(line.startswith("recommended: lock ") for line in lines)
    assert lines[-1].startswith("note: A probe from one host cannot show")


def test_doctor_json_is_one_object_with_the_report(tmp_path: Path, mounted: Mount) -> None:
    where = tmpfs(mounted)
    result = doctor("doctor", str(where), "--peer", str(where), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS
    assert report["mount"]["kind"] == report["peer_mount"]["kind"] == "memory"
    assert list(report["probes"]) == LOCAL_PROBES + list(probes.PEER_PROBES)
    assert set(report["probes"]["flock"]) == {"ok", "detail", "seconds", "samples"}
    assert (report["lock"], report["watch"], report["safe_for_flock"], report["network"]) == (
        "flock",
        "notify",
        True,
        False,
    )
    assert report["probes"]["peer_lag"]["samples"] == 0


def test_doctor_defaults_to_the_board_option_then_the_current_directory(tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.mkdir()
    result = doctor("--board", str(board), "doctor", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["path"] == str(board.resolve())
    env = {k: v for k, v in os.environ.items() if k != "BLACKBOARD_DIR"}
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard", "doctor", "--json"],
        cwd=board,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(board.resolve())


def test_doctor_errors_are_one_line(tmp_path: Path, mounted: Mount) -> None:
    line = error_line(doctor("doctor", str(tmp_path / "missing")), 2)
    assert line == f"blackboard: error: {tmp_path / 'missing'}: no such directory"
    (tmp_path / "file").write_text("x")
    assert error_line(doctor("doctor", str(tmp_path / "file")), 2).endswith("not a directory")
    assert error_line(doctor("doctor", str(tmp_path), "--peer", str(tmp_path / "nope")), 2).endswith(
        "no such directory"
    )
    read_only = tmpfs(mounted, "ro", "ro")
    assert "not writable (Read-only file system)" in error_line(doctor("doctor", str(read_only)), 1)
