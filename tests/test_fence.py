"""Fenced writes (spec/FORMAT.md section 8, step 5): a write conditioned on a key's latest change
being the one at a seq (etcd's mod_revision compare), the core of lease fencing."""

from __future__ import annotations

import pytest

from blackboard import Board, Fence, Fenced, InvalidKey, InvalidValue, VersionConflict


def test_a_fenced_write_lands_while_the_fence_holds(board: Board) -> None:
    grant = board.write("leases/job", {"holder": "a"})
    fence = Fence("leases/job", grant.seq)
    assert board.write("result", 1, fence=fence).version == 1
    assert board.delete("result", fence=fence).version == 0
    with board.transaction() as tx:
        tx.fence(fence)
        tx.write("result", 2)
    assert board.read("result") == 2


@pytest.mark.parametrize("change", ["write", "delete"])
def test_a_fenced_write_after_the_fence_key_changed_is_refused_and_writes_nothing(board: Board, change: str) -> None:
    grant = board.write("leases/job", {"holder": "a"})
    board.write("result", "from a")
    if change == "write":
        board.write("leases/job", {"holder": "b"})  # a newer grant
    else:
        board.delete("leases/job")
    before = board.last_seq
    with pytest.raises(Fenced, match="leases/job") as err:
        board.write("result", "stale a", fence=Fence("leases/job", grant.seq))
    assert err.value.expected_seq == grant.seq and err.value.exit_code == 11
    with pytest.raises(Fenced), board.transaction() as tx:
        tx.fence(Fence("leases/job", grant.seq))
        tx.write("result", "stale a")
    assert board.last_seq == before and board.read("result") == "from a"


def test_an_object_carrying_a_fence_is_accepted(board: Board) -> None:
    grant = board.write("leases/job", 1)

    class Lease:
        fence = Fence("leases/job", grant.seq)

    assert board.write("out", 1, fence=Lease()).seq == grant.seq + 1


@pytest.mark.parametrize("bad", [("leases/job",), Fence("../x", 1), Fence("k", 0), Fence("k", True), "k"])
def test_bad_fences_are_invalid(board: Board, bad: object) -> None:
    with pytest.raises((InvalidValue, InvalidKey)):
        board.write("out", 1, fence=bad)  # type: ignore[arg-type]
    assert board.last_seq == 0


def test_version_conditions_are_checked_too(board: Board) -> None:
    grant = board.write("leases/job", 1)
    with pytest.raises(VersionConflict):
        board.write("out", 1, fence=Fence("leases/job", grant.seq), expect_version=3)
