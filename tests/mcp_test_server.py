"""A stdio MCP server for the client tests: a slow tool that reports how many calls ran at once, and a crashing
tool. Run as `python tests/mcp_test_server.py`."""
import asyncio

from mcp.server.mcpserver import MCPServer

server = MCPServer("test-tools", log_level="CRITICAL")  # rendering the crash traceback would take seconds
state = {"active": 0, "peak": 0}


@server.tool()
async def sleep(seconds: float) -> str:
  """Sleeps, then says how many calls were running at the busiest moment so far."""
  state["active"] += 1
  state["peak"] = max(state["peak"], state["active"])
  try:
    await asyncio.sleep(seconds)
  finally:
    state["active"] -= 1
  return f"slept {seconds}; peak {state['peak']}"


@server.tool()
def crash() -> str:
  """Fails with an unexpected exception."""
  raise RuntimeError("boom")


@server.tool()
def search(query: str) -> str:
  """Echoes the query."""
  return f"echo {query}"


if __name__ == "__main__":
  server.run("stdio")
