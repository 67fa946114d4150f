"""The HTTP client: one ``Keel`` object per server and token, over the standard library's urllib."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Optional

from .errors import KeelError, Timeout, error_for
from .types import Decision, Delivery, Event, Execution, Gate, Json, Rows, Started, Trace

#: Statuses ``wait(..., until_gate=True)`` also returns at.
_GATE = "at_gate"


class Keel:
    """A client of one Keel server, acting with one bearer token (``keel tokens create``).

    Every call is one or more plain HTTP requests; nothing runs in the background. Errors are
    :class:`~keel_client.errors.KeelError` subclasses named after the status.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {base_url!r}: expected http://host:port or https://…")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        # The token stays out of reprs, logs and tracebacks.
        return f"Keel({self.base_url!r})"

    # -- transport ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Dict[str, Any]] = None,
        body: Optional[Json] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> "tuple[int, Json, Dict[str, str]]":
        url = self.base_url + path
        if query:
            pairs = {k: str(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None
        h = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
                got = {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as e:
            raw = e.read()
            parsed = _parse(raw)
            raise error_for(e.code, parsed, f"{method} {path}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise KeelError(0, f"{method} {path}: cannot reach {self.base_url}: {e}") from None
        return status, _parse(raw), got

    def _get(self, path: str, **query: Any) -> Json:
        return self._request("GET", path, query=query)[1]

    # -- executions -----------------------------------------------------------------------

    def start(
        self,
        goal: str,
        *,
        strategy: Optional[str] = None,
        subject: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Started:
        """Starts an execution (the server's default strategy unless one is named). With an
        ``idempotency_key``, a retry answers with the first execution (``created`` False)."""
        body: Json = {"goal": goal}
        if strategy is not None:
            body["strategy"] = strategy
        if subject is not None:
            body["subject"] = subject
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        status, d, _ = self._request("POST", "/v1/executions", body=body, headers=headers)
        return Started.from_json(d, created=status == 201)

    def execution(self, exec_id: str) -> Execution:
        """One execution (404 :class:`NotFound` for one of another tenant)."""
        return Execution.from_json(self._get(f"/v1/executions/{_seg(exec_id)}"))

    def executions(self, *, status: Optional[str] = None, limit: int = 100) -> Iterator[Execution]:
        """The tenant's executions, newest first, every page (``limit`` per request)."""
        cursor: Optional[str] = None
        while True:
            d = self._get("/v1/executions", status=status, limit=limit, cursor=cursor)
            for x in _list(d, "executions"):
                yield Execution.from_json(x)
            nxt = d.get("next_cursor")
            if not isinstance(nxt, str):
                return
            cursor = nxt

    def wait(
        self,
        exec_id: str,
        *,
        timeout: float = 60.0,
        poll: float = 0.2,
        until_gate: bool = False,
    ) -> Execution:
        """Polls until the execution has ended (or, with ``until_gate``, waits at a gate) and
        returns it; :class:`Timeout` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            x = self.execution(exec_id)
            if x.finished or (until_gate and x.status == _GATE):
                return x
            if time.monotonic() >= deadline:
                raise Timeout(0, f"execution {exec_id} still {x.status} after {timeout} s")
            time.sleep(poll)

    # -- events ---------------------------------------------------------------------------

    def events(self, exec_id: str, *, from_seq: int = 1) -> List[Event]:
        """The execution's events from ``from_seq``, in seq order (every page)."""
        out: List[Event] = []
        seq: Optional[int] = from_seq
        while seq is not None:
            d = self._get(f"/v1/executions/{_seg(exec_id)}/events", from_seq=seq)
            out.extend(Event.from_json(e) for e in _list(d, "events"))
            nxt = d.get("next_from_seq")
            seq = nxt if isinstance(nxt, int) else None
        return out

    def follow(
        self,
        exec_id: str,
        *,
        from_seq: int = 1,
        poll: float = 0.2,
        timeout: Optional[float] = None,
        until_gate: bool = False,
    ) -> Iterator[Event]:
        """Yields the execution's events as they are appended, from ``from_seq``, and returns
        once it has ended (or, with ``until_gate``, reached a gate). The server has no push
        endpoint for events, so this polls the events page from the last seq seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        nxt = from_seq
        while True:
            batch = self.events(exec_id, from_seq=nxt)
            for e in batch:
                nxt = e.seq + 1
                yield e
            last = batch[-1].type if batch else None
            if last in ("exec.finished", "exec.cancelled"):
                return
            if until_gate and last == "gate.requested":
                return
            if not batch and self.execution(exec_id).finished:
                # Ended between two reads: take what came last, then stop.
                for e in self.events(exec_id, from_seq=nxt):
                    yield e
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(0, f"execution {exec_id} did not end within {timeout} s")
            time.sleep(poll)

    # -- gates ----------------------------------------------------------------------------

    def gates(self, status: str = "pending", *, limit: int = 500) -> List[Gate]:
        """The tenant's gates, oldest request first: ``pending``, ``decided`` or ``all``."""
        out: List[Gate] = []
        cursor: Optional[str] = None
        while True:
            d = self._get("/v1/gates", status=status, limit=limit, cursor=cursor)
            out.extend(Gate.from_json(g) for g in _list(d, "gates"))
            nxt = d.get("next_cursor")
            if not isinstance(nxt, str):
                return out
            cursor = nxt

    def gate(self, gate_id: str) -> Gate:
        """One gate with its evidence pack."""
        return Gate.from_json(self._get(f"/v1/gates/{_seg(gate_id)}"))

    def decide(self, gate_id: str, verdict: str, reason: str = "") -> Decision:
        """Decides a gate (``approve`` or ``reject``; a rejection needs a reason, which the agent
        is told). :class:`Conflict` when somebody decided it first."""
        body: Json = {"verdict": verdict}
        if reason:
            body["reason"] = reason
        d = self._request("POST", f"/v1/gates/{_seg(gate_id)}/decision", body=body)[1]
        return Decision.from_json(d, gate_id)

    def approve(self, gate_id: str, reason: str = "") -> Decision:
        """Approves a gate: the action runs with its idempotency key."""
        return self.decide(gate_id, "approve", reason)

    def reject(self, gate_id: str, reason: str) -> Decision:
        """Rejects a gate with the reason the agent reads next."""
        return self.decide(gate_id, "reject", reason)

    def notifications(self, gate_id: str) -> List[Delivery]:
        """The gate's webhook notifications and every attempt to deliver them."""
        d = self._get(f"/v1/gates/{_seg(gate_id)}/notifications")
        return [Delivery.from_json(x) for x in _list(d, "deliveries")]

    # -- observability --------------------------------------------------------------------

    def sql(self, query: str) -> Rows:
        """One read-only query over ``traces.steps``, ``gold.executions`` and
        ``traces.retrieval_samples`` (the tenant's rows only)."""
        return Rows.from_json(self._request("POST", "/v1/sql", body={"query": query})[1])

    def trace(self, trace_id: str) -> Trace:
        """A trace's steps from the projections."""
        return Trace.from_json(self._get(f"/v1/traces/{_seg(trace_id)}"))

    def health(self) -> bool:
        """True when the server answers ``/healthz``."""
        return self._get("/healthz").get("status") == "ok"


def _parse(raw: bytes) -> Json:
    if not raw:
        return {}
    try:
        v = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def _list(d: Json, key: str) -> List[Json]:
    v = d.get(key)
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _seg(s: str) -> str:
    """A path segment, quoted: an id never changes which path is asked."""
    return urllib.parse.quote(s, safe="")
