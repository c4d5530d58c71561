"""Tools for the web environment: the tool-call parser, the MCP client, and our corpus server.

Public API:
  tool_calls.parse_tool_call(response) -> ToolCallParse(call: ToolCall | None, num_invalid, repaired, reasons,
                                                         remainder)
  mcp_client.ToolClient(ToolServerConfig)        sync MCP client: .tools (schemas for `tools=`), .call_batch(...)
  corpus.read_corpus(path) / corpus_index.CorpusIndex.open(path, IndexConfig)
  python -m atommem_jax.tools.corpus_server --corpus FILE.jsonl [--host H --port P | --stdio]
  python -m atommem_jax.tools.build_corpus {html,synthetic} ...
"""
