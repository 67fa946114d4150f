"""What the API returns, as typed, immutable values. Each keeps the server's JSON in ``raw``, so a
field this client does not know yet is still reachable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

#: Execution statuses that are not final: the execution still runs, waits at a gate or is
#: suspended. Anything else (``success``, ``error``, ``killed``, ``cancelled``, …) is an end.
LIVE_STATUSES = frozenset({"running", "at_gate", "suspended"})

Json = Dict[str, Any]


def _str(d: Json, key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


def _opt_str(d: Json, key: str) -> Optional[str]:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _int(d: Json, key: str) -> int:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _opt_int(d: Json, key: str) -> Optional[int]:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _obj(d: Json, key: str) -> Json:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


@dataclass(frozen=True)
class Started:
    """The answer to a start: the execution's ids, and whether it was new."""

    exec_id: str
    trace_id: str
    strategy_version: str
    status: str
    #: False when an ``Idempotency-Key`` repeat answered with the first execution.
    created: bool
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json, created: bool) -> "Started":
        return cls(
            _str(d, "exec_id"), _str(d, "trace_id"), _str(d, "strategy_version"),
            _str(d, "status"), created, d,
        )


@dataclass(frozen=True)
class Execution:
    """One execution as the server's approval book shows it."""

    exec_id: str
    tenant: str
    trace_id: str
    strategy_version: str
    goal: str
    started_at: str
    updated_at: str
    #: ``running``, ``at_gate``, ``suspended``, ``cancelled`` or the outcome (``success``, …).
    status: str
    outcome: Optional[str]
    #: The answer, or why it ended.
    detail: Optional[str]
    steps: int
    tokens: int
    cost_micros: int
    cost_known: bool
    gates: int
    replay_of: Optional[str]
    raw: Json = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """True once the execution has ended (whatever its outcome)."""
        return self.status not in LIVE_STATUSES

    @property
    def cost_usd(self) -> Optional[float]:
        """The cost in dollars, or None when part of it is unknown (an unpriced model)."""
        return self.cost_micros / 1e6 if self.cost_known else None

    @classmethod
    def from_json(cls, d: Json) -> "Execution":
        return cls(
            exec_id=_str(d, "exec_id"),
            tenant=_str(d, "tenant"),
            trace_id=_str(d, "trace_id"),
            strategy_version=_str(d, "strategy_version"),
            goal=_str(d, "goal"),
            started_at=_str(d, "started_at"),
            updated_at=_str(d, "updated_at"),
            status=_str(d, "status"),
            outcome=_opt_str(d, "outcome"),
            detail=_opt_str(d, "detail"),
            steps=_int(d, "steps"),
            tokens=_int(d, "tokens"),
            cost_micros=_int(d, "cost_micros"),
            cost_known=d.get("cost_known") is not False,
            gates=_int(d, "gates"),
            replay_of=_opt_str(d, "replay_of"),
            raw=d,
        )


@dataclass(frozen=True)
class Event:
    """One event of an execution's log (its wire form; the typed payload is ``data``)."""

    event_id: str
    exec_id: str
    tenant: str
    seq: int
    ts: str
    #: ``exec.started``, ``tool.called``, ``gate.requested``, ``exec.finished``, …
    type: str
    trace_id: str
    step_n: int
    schema_version: int
    data: Json
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "Event":
        return cls(
            _str(d, "event_id"), _str(d, "exec_id"), _str(d, "tenant"), _int(d, "seq"),
            _str(d, "ts"), _str(d, "type"), _str(d, "trace_id"), _int(d, "step_n"),
            _int(d, "schema_version"), _obj(d, "data"), d,
        )


@dataclass(frozen=True)
class Decision:
    """A gate's decision: who, what, why, and how long the gate waited for it."""

    gate_id: str
    #: ``approve``, ``reject`` or ``expired`` (by the queue's SLA).
    verdict: str
    approver: str
    reason: str
    latency_ms: int
    exec_id: Optional[str]
    at: Optional[str]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json, gate_id: str = "") -> "Decision":
        return cls(
            gate_id=_str(d, "gate_id") or gate_id,
            verdict=_str(d, "verdict"),
            approver=_str(d, "approver"),
            reason=_str(d, "reason"),
            latency_ms=_int(d, "latency_ms"),
            exec_id=_opt_str(d, "exec_id"),
            at=_opt_str(d, "at"),
            raw=d,
        )


@dataclass(frozen=True)
class Gate:
    """An approval gate: the exact action, why it waits, and the evidence to decide it."""

    gate_id: str
    exec_id: str
    tenant: str
    trace_id: str
    strategy_version: str
    queue: str
    consequence_tier: int
    action: Json
    reason: str
    evidence_pack: Json
    requested_at: str
    deadline_ms: Optional[int]
    expire_after_ms: Optional[int]
    escalated: bool
    decision: Optional[Decision]
    closed: bool
    replay: bool
    raw: Json = field(repr=False, compare=False)
    #: The evidence read when the gate was fetched (``Keel.gate``; lists carry none): the tool
    #: results with their outputs, earlier actions on the same object, the subject's history,
    #: the strategy's record at the tier.
    evidence: Optional[Json] = None

    @property
    def pending(self) -> bool:
        """True while the gate waits for a decision."""
        return self.decision is None and not self.closed

    @classmethod
    def from_json(cls, d: Json) -> "Gate":
        gate_id = _str(d, "gate_id")
        decision = d.get("decision")
        return cls(
            gate_id=gate_id,
            exec_id=_str(d, "exec_id"),
            tenant=_str(d, "tenant"),
            trace_id=_str(d, "trace_id"),
            strategy_version=_str(d, "strategy_version"),
            queue=_str(d, "queue"),
            consequence_tier=_int(d, "consequence_tier"),
            action=_obj(d, "action"),
            reason=_str(d, "reason"),
            evidence_pack=_obj(d, "evidence_pack"),
            requested_at=_str(d, "requested_at"),
            deadline_ms=_opt_int(d, "deadline_ms"),
            expire_after_ms=_opt_int(d, "expire_after_ms"),
            escalated=d.get("escalated") is True,
            decision=Decision.from_json(decision, gate_id) if isinstance(decision, dict) else None,
            closed=d.get("closed") is True,
            replay=d.get("replay") is True,
            raw=d,
            evidence=d["evidence"] if isinstance(d.get("evidence"), dict) else None,
        )


@dataclass(frozen=True)
class Attempt:
    """One attempt to deliver a webhook notification."""

    n: int
    at: str
    #: The receiver's answer, or None when it could not be reached.
    http_status: Optional[int]
    error: Optional[str]
    latency_ms: int

    @classmethod
    def from_json(cls, d: Json) -> "Attempt":
        return cls(
            _int(d, "n"), _str(d, "at"), _opt_int(d, "http_status"), _opt_str(d, "error"),
            _int(d, "latency_ms"),
        )


@dataclass(frozen=True)
class Delivery:
    """A webhook notification of a gate (``gate.requested`` or ``gate.escalated``)."""

    #: Sent as the ``Keel-Delivery`` header, the same on every attempt.
    id: str
    webhook: str
    kind: str
    #: ``pending``, ``delivered``, ``failed`` or ``skipped``.
    status: str
    #: Why it was skipped.
    detail: Optional[str]
    attempts: List[Attempt]

    @classmethod
    def from_json(cls, d: Json) -> "Delivery":
        attempts = d.get("attempts")
        return cls(
            _str(d, "id"), _str(d, "webhook"), _str(d, "kind"), _str(d, "status"),
            _opt_str(d, "detail"),
            [Attempt.from_json(a) for a in attempts if isinstance(a, dict)]
            if isinstance(attempts, list) else [],
        )


@dataclass(frozen=True)
class Rows:
    """The result of a SQL query: column names and rows of values."""

    columns: List[str]
    rows: List[List[Any]]

    def records(self) -> List[Dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    @classmethod
    def from_json(cls, d: Json) -> "Rows":
        cols = d.get("columns")
        rows = d.get("rows")
        return cls(
            [c for c in cols if isinstance(c, str)] if isinstance(cols, list) else [],
            [r for r in rows if isinstance(r, list)] if isinstance(rows, list) else [],
        )


@dataclass(frozen=True)
class Trace:
    """A trace's steps from the projections (``traces.steps``), in order."""

    trace_id: str
    steps: List[Json]

    @classmethod
    def from_json(cls, d: Json) -> "Trace":
        steps = d.get("steps")
        return cls(
            _str(d, "trace_id"),
            [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else [],
        )
