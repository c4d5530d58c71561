"""What the agent sees: a document cut into chunks, and each turn's observation rendered from the memory state.

The memory holds token ids; the host decodes the entries shown at the last retrieval (`shown_slots_BxK`) into the
`Memory i:` lines, so "Memory i" in the next response names exactly what was displayed.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np

from atommem_jax.agent import env as env_lib
from atommem_jax.agent import protocol
from atommem_jax.agent.config import AgentConfig
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig

DISABLED = "(disabled)"
EMPTY = "(empty)"


@dataclasses.dataclass(frozen=True)
class EpisodeDocument:
  """The host-side, per-episode text an observation draws on (built once per episode, shared by its G samples)."""

  chunks: tuple[str, ...]
  rag_passages: tuple[str, ...]  # per question: the top-K chunks for it, rendered (RAG only)
  full_context: str  # the document cut to the context window (full context only)

  @property
  def num_chunks(self) -> int:
    return len(self.chunks)

  @classmethod
  def build(cls, episode: Any, tokenizer: Any, embed_fn: transitions.EmbedFn, config: AgentConfig,
            top_k: int) -> "EpisodeDocument":
    ids = tokenizer.encode(episode.document, add_special_tokens=False)
    chunk_ids = env_lib.chunk_document(ids, config)
    chunks = tuple(tokenizer.decode(c) for c in chunk_ids)
    rag, full = (), ""
    if config.method == "rag":
      rag = tuple(_rag_passages(chunk_ids, chunks, episode.questions, tokenizer, embed_fn, config, top_k))
    if config.method == "full_context":
      full = tokenizer.decode(ids[:config.context_tokens])
    return cls(chunks=chunks, rag_passages=rag, full_context=full)


def _embed(embed_fn: transitions.EmbedFn, token_lists: Sequence[Sequence[int]], width: int,
           is_query: bool) -> np.ndarray:
  """Embeddings of texts cut or padded to `width` tokens; rows padded to a power of two so shapes (and compiled
  programs) repeat across episodes."""
  rows = 1 << max(0, len(token_lists) - 1).bit_length()
  tokens_NxT = np.zeros((rows, width), np.int32)
  lengths_N = np.zeros((rows,), np.int32)
  for i, ids in enumerate(token_lists):
    ids = list(ids)[:width]
    tokens_NxT[i, :len(ids)], lengths_N[i] = ids, len(ids)
  return np.asarray(_jitted_embed(tokens_NxT, lengths_N, embed_fn, is_query))[:len(token_lists)]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _jitted_embed(tokens_NxT, lengths_N, embed_fn, is_query):
  return embed_fn(tokens_NxT, lengths_N, is_query)


def _rag_passages(chunk_ids: list[list[int]], chunks: Sequence[str], questions: Sequence[str], tokenizer: Any,
                  embed_fn: transitions.EmbedFn, config: AgentConfig, top_k: int) -> list[str]:
  """For each question, its top-K chunks by embedding similarity, shown in document order."""
  if not chunks:
    return ["(no passages)"] * len(questions)
  question_ids = [tokenizer.encode(q, add_special_tokens=False) for q in questions]
  chunks_NxD = _embed(embed_fn, chunk_ids, config.chunk_tokens, False)
  questions_QxD = _embed(embed_fn, question_ids, max(64, max(len(q) for q in question_ids)), True)
  scores_QxN = questions_QxD @ chunks_NxD.T
  passages = []
  for scores_N in scores_QxN:
    best = sorted(np.argsort(-scores_N, kind="stable")[:top_k].tolist())
    passages.append("\n\n".join(f"Passage {i + 1}:\n{chunks[i]}" for i in best))
  return passages


@functools.partial(jax.jit, static_argnames=("embed_fn", "config"))
def _query_and_retrieve(memory: memory_state.MemoryState, tokens_BxQ: jax.Array, lengths_B: jax.Array,
                        embed_fn: transitions.EmbedFn, config: MemoryConfig) -> memory_state.MemoryState:
  memory = transitions.set_query(memory, tokens_BxQ, lengths_B, embed_fn, config=config)
  memory, _, _ = transitions.retrieve(memory, config=config)
  return memory


def set_initial_query(memory: memory_state.MemoryState, queries: Sequence[str], tokenizer: Any,
                      embed_fn: transitions.EmbedFn, config: MemoryConfig) -> memory_state.MemoryState:
  """Every trajectory starts with its first question as the query (not one of the agent's Reads)."""
  tokens_BxQ = np.zeros((len(queries), config.query_tokens), np.int32)
  lengths_B = np.zeros((len(queries),), np.int32)
  for b, query in enumerate(queries):
    ids = tokenizer.encode(query, add_special_tokens=False)[:config.query_tokens]
    tokens_BxQ[b, :len(ids)], lengths_B[b] = ids, len(ids)
  return _query_and_retrieve(memory, tokens_BxQ, lengths_B, embed_fn, config)


def _text(tokenizer: Any, tokens: np.ndarray, length: int) -> str:
  return tokenizer.decode(tokens[:int(length)].tolist())


def shown_entries(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> list[str]:
  """The entries shown at the last retrieval, in rank order ("Memory 1" first); pass a host copy of the state."""
  out = []
  for slot in np.asarray(memory.shown_slots_BxK[row]):
    if slot < 0:
      break
    out.append(_text(tokenizer, memory.entry_tokens_BxMxE[row, slot], memory.entry_lengths_BxM[row, slot]))
  return out


def scratchpad_and_query(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> tuple[str, str]:
  return (_text(tokenizer, memory.scratchpad_tokens_BxS[row], memory.scratchpad_length_B[row]),
          _text(tokenizer, memory.query_tokens_BxQ[row], memory.query_length_B[row]))


def storage_in_creation_order(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> list[str]:
  live = [int(s) for s in np.flatnonzero(np.asarray(memory.valid_BxM[row]))]
  live.sort(key=lambda s: int(memory.entry_ids_BxM[row, s]))
  return [_text(tokenizer, memory.entry_tokens_BxMxE[row, s], memory.entry_lengths_BxM[row, s]) for s in live]


def observation(episode: Any, document: EpisodeDocument, env: env_lib.EnvState, memory: memory_state.MemoryState,
                row: int, shown: Sequence[str], tokenizer: Any, config: AgentConfig,
                templates: protocol.Templates) -> str:
  """The user message of this turn for one trajectory (host copies of the env and memory states)."""
  question_index = min(int(env.question_index_B[row]), len(episode.questions) - 1)
  question = episode.questions[question_index]
  scratchpad, query = scratchpad_and_query(memory, row, tokenizer)
  answering = bool(env.answer_phase_B[row])
  if config.method == "rag":
    return templates.render("rag_answer", question=question, chunks=document.rag_passages[question_index])
  if config.method == "full_context":
    return templates.render("full_context_answer", question=question, context=document.full_context)
  chunk_fields = {}
  if not answering:
    chunk_index = int(env.chunk_index_B[row])
    chunk_fields = dict(chunk=document.chunks[chunk_index], chunk_number=chunk_index + 1,
                        num_chunks=document.num_chunks,
                        questions=protocol.render_questions(episode.questions, question_index))
  if config.method == "memagent":
    memory_text = scratchpad or EMPTY
    if answering:
      return templates.render("memagent_answer", question=question, memory=memory_text)
    return templates.render("memagent_read", memory=memory_text, **chunk_fields)
  fields = dict(
      scratchpad=(scratchpad or EMPTY) if config.use_scratchpad else DISABLED,
      query=(query or EMPTY) if config.use_storage else DISABLED,
      memories=protocol.render_entries(shown) if config.use_storage else DISABLED)
  if answering:
    return templates.render("answer", question=question, **fields)
  return templates.render("read", **fields, **chunk_fields)
