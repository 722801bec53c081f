"""The work layer: leases with fencing tokens, work queues with consumer groups, tasks with
dependencies (spec/WORK.md). Built on `blackboard`'s public names only.

    with board.lease("deploy", ttl=30) as lease:          # renewed in the background
        board.write("deploy/status", "running", fence=lease)  # refused once someone else holds it
"""

from . import lease, queue, tasks
from .lease import Lease
from .queue import Consumer, Delivery
from .tasks import Task

__all__ = ["Consumer", "Delivery", "Lease", "Task", "lease", "queue", "tasks"]
