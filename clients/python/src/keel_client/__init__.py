"""A typed Python client for Keel's HTTP API (``keel serve``).

>>> from keel_client import Keel
>>> keel = Keel("http://127.0.0.1:8080", token)
>>> started = keel.start("Where is my order 1017?")
>>> keel.wait(started.exec_id).status
'success'
"""

from .client import Keel
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    KeelError,
    NotFound,
    Timeout,
    TooMany,
    Unauthorized,
    Unprocessable,
)
from .types import (
    LIVE_STATUSES,
    Attempt,
    Decision,
    Delivery,
    Event,
    Execution,
    Gate,
    Rows,
    Started,
    Trace,
)

__all__ = [
    "Keel",
    "KeelError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Unprocessable",
    "TooMany",
    "Timeout",
    "Started",
    "Execution",
    "Event",
    "Gate",
    "Decision",
    "Delivery",
    "Attempt",
    "Rows",
    "Trace",
    "LIVE_STATUSES",
]

__version__ = "0.1.0"
