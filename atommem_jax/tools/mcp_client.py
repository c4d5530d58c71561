"""A synchronous MCP client for the host rollout loop: tool schemas for the prompt, and a turn's calls concurrently.

`ToolClient(ToolServerConfig(url=... | command=(...)))` connects to a server over streamable HTTP (`http://H:P/mcp`)
or by starting it as a child process speaking stdio, lists its tools and keeps those in `allowed_tools` (default
`search`, `fetch_url`; a listed name the server lacks is reported in `missing_tools`, and no tool left at all is an
error). Every method is synchronous: the MCP session lives on an asyncio event loop in a background thread, entered
and left by one task (the SDK's transports hold anyio task groups, which must exit in the task that entered them),
and calls are submitted to that loop.

- `tools`: the offered tools as MCP dicts `{name, description, input_schema}`; `chat_template_tools()`: the same as
  OpenAI-style function schemas `{"type": "function", "function": {name, description, parameters}}`, the form
  `tokenizer.apply_chat_template(..., tools=...)` renders (Qwen3's template prints them inside `<tools>`).
- `call_batch(calls)`: one `ToolCall | None` per running trajectory; the calls go out concurrently (at most
  `max_concurrency` in flight), each with `call_timeout_s`. The result per slot is None for None, else a
  `ToolResult` whose `text` is what the model reads next. A tool that is not offered, a tool error (`is_error`), a
  timeout, or a broken connection all become that text, never an exception.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import shlex
import threading
import time
from typing import Any, Sequence

from atommem_jax.tools.tool_calls import ToolCall

# The HTTP client logs every request at INFO: a training run's log would hold one line per tool call.
logging.getLogger("httpx").setLevel(logging.WARNING)

DEFAULT_TOOLS = ("search", "fetch_url")


class ToolServerError(RuntimeError):
  """The tool server cannot be reached, or offers none of the allowed tools."""


@dataclasses.dataclass(frozen=True)
class ToolServerConfig:
  """Where the tools are: `url` (streamable HTTP) or `command` (argv of a stdio server), exactly one of them."""

  url: str = ""
  command: tuple[str, ...] = ()
  allowed_tools: tuple[str, ...] = DEFAULT_TOOLS
  call_timeout_s: float = 60.0
  connect_timeout_s: float = 120.0
  max_concurrency: int = 64

  def __post_init__(self):
    if bool(self.url) == bool(self.command):
      raise ValueError(f"ToolServerConfig needs exactly one of url and command, got url={self.url!r}, "
                       f"command={self.command!r}")
    if isinstance(self.command, str):
      object.__setattr__(self, "command", tuple(shlex.split(self.command)))
    if self.call_timeout_s <= 0 or self.connect_timeout_s <= 0 or self.max_concurrency < 1:
      raise ValueError(f"ToolServerConfig: timeouts and max_concurrency must be positive: {self}")


@dataclasses.dataclass(frozen=True)
class ToolResult:
  """A call's outcome. `text` is the tool response the model reads; `structured` is the server's structured
  content (None when it sent none or on failure)."""

  text: str
  is_error: bool = False
  timed_out: bool = False
  seconds: float = 0.0
  structured: dict | None = None


def result_text(result: Any) -> str:
  """The text of a `CallToolResult`: its text blocks joined; other blocks named by type."""
  parts = []
  for block in result.content:
    parts.append(block.text if getattr(block, "type", "") == "text" else f"[{getattr(block, 'type', 'content')}]")
  return "\n".join(parts)


def _first_leaf(err: BaseException) -> BaseException:
  """The first real error inside (nested) exception groups, which the SDK's task groups wrap errors in."""
  while isinstance(err, BaseExceptionGroup) and err.exceptions:
    err = err.exceptions[0]
  return err


class ToolClient:
  """A connected MCP client with synchronous methods; close it (or use `with`) to end the session."""

  def __init__(self, config: ToolServerConfig):
    self.config = config
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-client", daemon=True)
    self._thread.start()
    self._stop: asyncio.Event | None = None
    self._session = None
    ready: concurrent.futures.Future = concurrent.futures.Future()
    self._runner = asyncio.run_coroutine_threadsafe(self._hold_session(ready), self._loop)
    try:
      listed = ready.result(timeout=config.connect_timeout_s)
    except BaseException as err:
      self.close()
      where = config.url or shlex.join(config.command)
      leaf = _first_leaf(err)
      reason = ("no answer in time" if isinstance(err, concurrent.futures.TimeoutError)
                else f"{type(leaf).__name__}: {leaf}")
      raise ToolServerError(f"cannot reach the tool server {where}: {reason}") from err
    by_name = {tool.name: tool for tool in listed}
    self.missing_tools = tuple(name for name in config.allowed_tools if name not in by_name)
    offered = [by_name[name] for name in config.allowed_tools if name in by_name]
    if not offered:
      self.close()
      raise ToolServerError(f"the tool server offers none of {list(config.allowed_tools)}; it lists "
                            f"{sorted(by_name)}")
    self.tools = [{"name": t.name, "description": t.description or "", "input_schema": t.input_schema}
                  for t in offered]
    self.tool_names = tuple(t["name"] for t in self.tools)

  # ------------------------------------------------------------------------------------------------- session

  async def _hold_session(self, ready: concurrent.futures.Future) -> None:
    """Enters the transport and the session, lists the tools, then holds both open until `close`."""
    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import PaginatedRequestParams

    self._stop = asyncio.Event()
    try:
      async with contextlib.AsyncExitStack() as stack:
        if self.config.url:
          read, write = await stack.enter_async_context(streamable_http_client(self.config.url))
        else:
          command, *args = self.config.command
          read, write = await stack.enter_async_context(
              stdio_client(StdioServerParameters(command=command, args=list(args))))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        tools, cursor = [], None
        while True:  # the tool list may come in pages
          listed = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
          tools.extend(listed.tools)
          cursor = listed.next_cursor
          if not cursor:
            break
        self._session = session
        if not ready.done():
          ready.set_result(tools)
        await self._stop.wait()
    except BaseException as err:
      if not ready.done():
        ready.set_exception(err if isinstance(err, Exception) else RuntimeError(repr(err)))
      if not isinstance(err, Exception):
        raise
    finally:
      self._session = None  # later calls answer "connection is closed"

  def close(self) -> None:
    """Ends the session (and a stdio server's process) and the loop thread; safe to call twice."""
    if not self._thread.is_alive():
      return
    if self._session is not None and self._stop is not None:
      self._loop.call_soon_threadsafe(self._stop.set)
    else:
      self._runner.cancel()  # still connecting, or already failed
    with contextlib.suppress(BaseException):
      self._runner.result(timeout=30)
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=30)
    if not self._thread.is_alive():
      self._loop.close()

  def __enter__(self) -> "ToolClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # ------------------------------------------------------------------------------------------------- tools

  def chat_template_tools(self) -> list[dict]:
    return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["input_schema"]}} for t in self.tools]

  async def _call(self, call: ToolCall, limit: asyncio.Semaphore) -> ToolResult:
    if call.name not in self.tool_names:
      return ToolResult(text=f"Error: unknown tool {call.name!r}; the tools are {', '.join(self.tool_names)}.",
                        is_error=True)
    async with limit:
      start = time.monotonic()
      session = self._session
      if session is None:
        return ToolResult(text="Error: the tool server connection is closed.", is_error=True)
      try:
        result = await asyncio.wait_for(session.call_tool(call.name, call.arguments), self.config.call_timeout_s)
      except asyncio.TimeoutError:
        return ToolResult(text=f"Error: the tool {call.name} timed out after {self.config.call_timeout_s:g} s.",
                          is_error=True, timed_out=True, seconds=time.monotonic() - start)
      except Exception as err:  # a protocol or transport failure reaches the model as text; the episode goes on
        return ToolResult(text=f"Error: the tool {call.name} failed: {_first_leaf(err)}", is_error=True,
                          seconds=time.monotonic() - start)
      structured = result.structured_content if isinstance(result.structured_content, dict) else None
      return ToolResult(text=result_text(result), is_error=bool(result.is_error), seconds=time.monotonic() - start,
                        structured=None if result.is_error else structured)

  async def _call_all(self, calls: Sequence[ToolCall | None]) -> list[ToolResult | None]:
    limit = asyncio.Semaphore(self.config.max_concurrency)

    async def none() -> None:
      return None

    return list(await asyncio.gather(*(none() if c is None else self._call(c, limit) for c in calls)))

  def call_batch(self, calls: Sequence[ToolCall | None]) -> list[ToolResult | None]:
    """One result per slot (None where the slot made no call); the calls run concurrently. Never raises for a
    tool's failure; a closed client is a `ToolServerError`."""
    if not self._thread.is_alive():
      raise ToolServerError("the tool client is closed")
    budget = self.config.call_timeout_s * (1 + len(calls) // self.config.max_concurrency) + 30
    return asyncio.run_coroutine_threadsafe(self._call_all(list(calls)), self._loop).result(budget)

  def call(self, call: ToolCall) -> ToolResult:
    return self.call_batch([call])[0]
