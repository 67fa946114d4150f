"""An MCP server (official Python SDK) whose tool asks its client for input mid-call.

`refund(order, amount)` sends a form elicitation asking how much to approve
(`{"approved_amount": number}`) and returns what it was answered: the action
(accept, decline, cancel) and, on accept, the amount. Each answer is also
appended to the file named by ELICIT_LOG (one JSON line per call), so a test can
tell how many times the tool ran. Speaks stdio.
"""

import json
import os

from pydantic import BaseModel, Field

from mcp.server.mcpserver import Context, MCPServer


class Approval(BaseModel):
    approved_amount: float = Field(description="The amount approved, in EUR")


server = MCPServer("keel-elicit-peer", version="1.0.0", subscriptions=False)


@server.tool(name="refund", description="Refund an order after a person approves the amount")
async def refund(order: str, amount: float, ctx: Context) -> dict:
    answer = await ctx.elicit(
        message=f"Refund order {order}: {amount} EUR requested. How much do you approve?",
        schema=Approval,
    )
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
