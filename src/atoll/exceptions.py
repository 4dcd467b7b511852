"""Errors that cross module boundaries.

Each carries the HTTP status the API returns for it, so routers never translate
errors by hand, and a message an operator can act on.
"""

from __future__ import annotations


class AtollError(Exception):
    code: int = 500
    title: str = "computeFault"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        self.message = str(self.args[0])


class BadRequest(AtollError):
    """The request is malformed."""

    code = 400
    title = "badRequest"


class Forbidden(AtollError):
    """Policy does not allow this."""

    code = 403
    title = "forbidden"


class QuotaExceeded(Forbidden):
    """Quota exceeded."""


class NotFound(AtollError):
    """The resource could not be found."""

    code = 404
    title = "itemNotFound"


class Conflict(AtollError):
    """The request conflicts with the current state."""

    code = 409
    title = "conflictingRequest"


class InstanceInvalidState(Conflict):
    """The server's state does not allow this action."""


class ConcurrentUpdate(Conflict):
    """Someone else changed this resource first; retry."""


class NoValidHost(AtollError):
    """No valid host was found."""

    code = 400
    title = "badRequest"


class CellUnavailable(AtollError):
    """A cell's database or transport cannot be reached."""

    code = 503
    title = "serviceUnavailable"


class RpcTimeout(AtollError):
    """A compute did not answer in time."""

    code = 504
    title = "computeFault"


class HypervisorUnavailable(AtollError):
    """Connection to the hypervisor is broken."""

    def __init__(self, message: str | None = None, host: str = "") -> None:
        super().__init__(
            message or f"Connection to the hypervisor is broken on host: {host or 'unknown'}"
        )


class VirtError(AtollError):
    """The hypervisor refused an operation."""


class InjectedFault(AtollError):
    """A configured fault point fired."""


class StepTimeout(AtollError):
    """A workflow step took longer than ``timeouts.workflow_step`` and was abandoned."""


class ReplyLost(AtollError):
    """A step took effect but its result never reached the workflow."""


class ResumedBeforePointOfNoReturn(AtollError):
    """The conductor driving a move stopped before its point of no return: the
    resumed workflow rolls the move back instead of going on."""


class GuestNotFound(VirtError):
    """No guest for this server is defined on the hypervisor."""
