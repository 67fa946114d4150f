"""An MCP server (official Python SDK) whose tool asks its client for input mid-call.

`refund(order, amount)` asks how much to approve (a form elicitation,
`{"approved_amount": number}`) and returns what it was answered: the action
(accept, decline, cancel) and, on accept, the amount. The question is asked the
SDK's way for each revision: a request to the client during the call on
2025-11-25, an `input_required` result the client answers by calling again on
2026-07-28. Each finished call is appended to the file named by ELICIT_LOG (one
JSON line), so a test can tell how many times the tool's body ran. Speaks stdio.
"""

import json
import os
from typing import Annotated, Any

from pydantic import BaseModel, Field

from mcp.server.mcpserver import Elicit, ElicitationResult, MCPServer, Resolve


class Approval(BaseModel):
    approved_amount: float = Field(description="The amount approved, in EUR")


def ask(order: str, amount: str) -> Elicit[Approval]:
    return Elicit(
        message=f"Refund order {order}: {amount} EUR requested. How much do you approve?",
        schema=Approval,
    )


server = MCPServer("keel-elicit-peer", version="1.0.0", subscriptions=False)


@server.tool(name="refund", description="Refund an order after a person approves the amount")
async def refund(
    order: str,
    amount: str,
    answer: Annotated[ElicitationResult[Approval], Resolve(ask)],
) -> dict[str, Any]:
    out = {"order": order, "action": answer.action, "approved_amount": None}
    if answer.action == "accept":
        out["approved_amount"] = answer.data.approved_amount
    log = os.environ.get("ELICIT_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    import anyio

    anyio.run(server.run_stdio_async)
