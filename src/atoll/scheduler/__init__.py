"""The scheduler: which compute host (in which cell) a server goes to.

``Scheduler.select_destinations`` reads every host's state (services, compute
nodes, zones, placement capacity), filters, weighs and claims the best host in
placement, returning it with alternates from the same cell.
"""

from atoll.scheduler.manager import Scheduler, Selection
from atoll.scheduler.request import SchedulingRequest

__all__ = ["Scheduler", "SchedulingRequest", "Selection"]
