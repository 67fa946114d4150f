"""The client against a real ``keel serve``.

The server is the caller's: ``KEEL_URL`` and ``KEEL_TOKEN`` (a token with the agent, approver and
operator roles of one tenant) name it. Keel's own test suite starts one from the repository's
root (crates/cli/tests/python_client.rs), whose demo strategies answer order questions and stop
every refund at a gate.
"""

from __future__ import annotations

import os
import unittest
import uuid
from typing import List

from keel_client import (
    BadRequest,
    Conflict,
    Event,
    Keel,
    NotFound,
    Unauthorized,
)


def client() -> Keel:
    url = os.environ.get("KEEL_URL")
    token = os.environ.get("KEEL_TOKEN")
    if not url or not token:
        raise unittest.SkipTest("set KEEL_URL and KEEL_TOKEN to a running keel serve")
    return Keel(url, token, timeout=30)


def seqs(events: List[Event]) -> List[int]:
    return [e.seq for e in events]


class Executions(unittest.TestCase):
    def setUp(self) -> None:
        self.keel = client()

    def test_start_wait_and_read_the_events_and_the_trace(self) -> None:
        started = self.keel.start("Where is my order 1017?")
        self.assertTrue(started.created)
        self.assertEqual(len(started.trace_id), 32)
        done = self.keel.wait(started.exec_id, timeout=60)
        self.assertEqual(done.status, "success", done.detail)
        self.assertTrue(done.finished)
        self.assertIn("A-1017", done.detail or "")
        self.assertGreater(done.steps, 0)

        events = self.keel.events(started.exec_id)
        self.assertEqual(events[0].type, "exec.started")
        self.assertEqual(events[-1].type, "exec.finished")
        self.assertEqual(seqs(events), list(range(1, len(events) + 1)), "gapless, in order")
        self.assertEqual(events[0].data["goal"], "Where is my order 1017?")
        later = self.keel.events(started.exec_id, from_seq=3)
        self.assertEqual(seqs(later), seqs(events)[2:])

        trace = self.keel.trace(done.trace_id)
        self.assertEqual(trace.trace_id, done.trace_id)
        self.assertIn("exec.started", [s["event_type"] for s in trace.steps])

        mine = [x.exec_id for x in self.keel.executions(limit=2)]
        self.assertIn(started.exec_id, mine, "every page is read")

    def test_follow_yields_every_event_once_until_the_end(self) -> None:
        started = self.keel.start("Where is my order 1021?")
        followed = list(self.keel.follow(started.exec_id, poll=0.05, timeout=60))
        self.assertEqual(followed[-1].type, "exec.finished")
        self.assertEqual(seqs(followed), list(range(1, len(followed) + 1)))
        self.assertEqual(seqs(followed), seqs(self.keel.events(started.exec_id)))

    def test_an_idempotency_key_repeat_answers_with_the_first_execution(self) -> None:
        key = f"py-{uuid.uuid4()}"
        first = self.keel.start("Where is my order 1018?", idempotency_key=key)
        again = self.keel.start("Where is my order 1018?", idempotency_key=key)
        self.assertTrue(first.created)
        self.assertFalse(again.created)
        self.assertEqual(first.exec_id, again.exec_id)

    def test_sql_over_the_projections(self) -> None:
        started = self.keel.start("Where is my order 1019?")
        self.keel.wait(started.exec_id)
        rows = self.keel.sql(
            "SELECT exec_id, outcome FROM gold.executions "
            f"WHERE exec_id = '{started.exec_id}'"
        )
        self.assertEqual(rows.columns, ["exec_id", "outcome"])
        self.assertEqual(rows.records(), [{"exec_id": started.exec_id, "outcome": "success"}])
        with self.assertRaises(BadRequest) as bad:
            self.keel.sql("DELETE FROM gold.executions")
        self.assertEqual(bad.exception.status, 400)

    def test_errors_are_typed(self) -> None:
        with self.assertRaises(NotFound):
            self.keel.execution(str(uuid.uuid4()))
        with self.assertRaises(BadRequest) as bad:
            self.keel.start("   ")
        self.assertEqual(bad.exception.field, "goal")
        url = os.environ["KEEL_URL"]
        with self.assertRaises(Unauthorized):
            Keel(url, "not-a-token").execution(str(uuid.uuid4()))
        self.assertNotIn("not-a-token", repr(Keel(url, "not-a-token")))


class Gates(unittest.TestCase):
    def setUp(self) -> None:
        self.keel = client()

    def refund_at_gate(self, order: int) -> str:
        started = self.keel.start(f"Please refund order {order}")
        at = self.keel.wait(started.exec_id, until_gate=True, timeout=60)
        self.assertEqual(at.status, "at_gate")
        gates = [g for g in self.keel.gates() if g.exec_id == started.exec_id]
        self.assertEqual(len(gates), 1)
        return gates[0].gate_id

    def test_list_approve_and_the_execution_runs_on(self) -> None:
        gate_id = self.refund_at_gate(1031)
        gate = self.keel.gate(gate_id)
        self.assertTrue(gate.pending)
        self.assertEqual(gate.consequence_tier, 3)
        self.assertEqual(gate.evidence_pack["goal"], "Please refund order 1031")
        assert gate.evidence is not None
        self.assertEqual(gate.evidence["tool_results"][0]["tool"], "lookup_order")
        self.assertIn('"order_id": "A-1031"', gate.evidence["tool_results"][0]["output"]["text"])
        self.assertEqual(gate.evidence["objects"], ["order_id=A-1031"])
        self.assertIn("issue_customer_refund", str(gate.action))

        decision = self.keel.approve(gate_id, "checked the order")
        self.assertEqual(decision.verdict, "approve")
        self.assertEqual(decision.exec_id, gate.exec_id)
        with self.assertRaises(Conflict):
            self.keel.reject(gate_id, "too late")

        done = self.keel.wait(gate.exec_id, timeout=60)
        self.assertEqual(done.status, "success", done.detail)
        decided = {g.gate_id: g for g in self.keel.gates("decided")}
        decision_seen = decided[gate_id].decision
        assert decision_seen is not None
        self.assertEqual(decision_seen.verdict, "approve")
        types = [e.type for e in self.keel.events(gate.exec_id)]
        self.assertIn("gate.decided", types)
        # The test server's project configures no webhooks: nothing was owed.
        self.assertEqual(self.keel.notifications(gate_id), [])

    def test_reject_needs_a_reason_which_the_agent_reads(self) -> None:
        gate_id = self.refund_at_gate(1032)
        with self.assertRaises(BadRequest) as bad:
            self.keel.decide(gate_id, "reject")
        self.assertEqual(bad.exception.field, "reason")
        self.keel.reject(gate_id, "the order was refunded already")
        exec_id = self.keel.gate(gate_id).exec_id
        followed = list(self.keel.follow(exec_id, poll=0.05, timeout=60))
        decided = [e for e in followed if e.type == "gate.decided"]
        self.assertEqual(decided[0].data["reason"], "the order was refunded already")
        self.assertEqual(followed[-1].type, "exec.finished")


if __name__ == "__main__":
    unittest.main()
