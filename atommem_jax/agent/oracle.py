"""A scripted policy for the synthetic task that uses the AtomMem ops well, and SFT pairs from its trajectories.

The oracle reads our packaged templates' observations (it finds the chunk after the `Chunk i of n:` line, the
`Memory i:` lines and the scratchpad section), knows which sentences of the world are facts, and:
- while reading: `<add_memory>`s each supporting fact of the listed questions that appears in the chunk and is not
  already shown (and, with probability `extra_notes`, one other sentence of the chunk after them: a note the answer
  turn must see past), then writes a short progress note to its scratchpad (a Create: the environment moves on);
  with nothing to store it writes a plain-text note and no tag (no valid tag: the environment moves on);
- answering: takes the supporting facts it can see (shown entries and its scratchpad); when all are visible it
  answers from them; otherwise it keeps the visible ones in its scratchpad (a memory op, which also resets the
  query counter) and `<update_query>`s the first missing fact, so retrieval brings it into view.
The answer is derived from the facts in view (the last hop's object, or the earlier-born of two people), never read
from the gold answer.

For the baselines (`method`), the same oracle plays the part the baseline allows: MemAgent rewrites its one memory
with every relevant fact in view (its old notes and the chunk) and answers from its notes; RAG and full context
answer from the facts in their passages, or box "unknown" when some are missing.
"""
from __future__ import annotations

import random
import re
import zlib
from typing import Any, Sequence

from atommem_jax import op_table
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.data.synthetic import Fact, SyntheticQuestion

_CHUNK_RE = re.compile(r"^Chunk (\d+) of \d+:\n", re.MULTILINE)
_MEMORY_LINE_RE = re.compile(r"^Memory \d+: (.*)$", re.MULTILINE)
_SCRATCHPAD_RE = re.compile(r"Scratchpad:\n(.*?)\n\nQuery:", re.DOTALL)
# A document's whole sentences (titles are one word with no period; a chunk may start inside a sentence).
_SENTENCE_RE = re.compile(r"(?<![^\n ])[A-Z][^.\n]* [^.\n]*\.")


class OraclePolicy:
  """`policy(observations) -> responses` for episodes built from these synthetic questions."""

  def __init__(self, questions: Sequence[SyntheticQuestion], method: str = "atommem", *, extra_notes: float = 0.0,
               seed: int = 0):
    self.questions = {q.record.question: q for q in questions}
    # The extra note is drawn from the observation's text and `seed` alone, so the pairs do not depend on batching.
    self.extra_notes = extra_notes
    self.seed = seed
    # The part it plays follows the method's memory parts (its row of `METHODS`): with storage, the CRUD ops; with
    # only a scratchpad, one memory rewritten while reading; with none, an answer from the passages shown.
    parts = long_context.METHODS[method].parts
    self.has_storage = "storage" in parts
    self.rewrites_one_memory = parts == ("scratchpad",)

  def __call__(self, observations: list[str]) -> list[str]:
    return [self.respond(o) for o in observations]

  def _questions_in(self, text: str) -> list[SyntheticQuestion]:
    found = [q for text_q, q in self.questions.items() if text_q in text]
    if not found:
      raise ValueError(f"the oracle knows none of the questions in this observation:\n{text[:500]}")
    return found

  def respond(self, observation: str) -> str:
    chunk = _CHUNK_RE.search(observation)
    shown = _MEMORY_LINE_RE.findall(observation)
    scratchpad_match = _SCRATCHPAD_RE.search(observation)
    scratchpad = scratchpad_match.group(1) if scratchpad_match else ""
    if chunk is not None and self.rewrites_one_memory:
      facts = [f for q in self._questions_in(observation[:chunk.start()]) for f in q.facts
               if f.sentence in observation]
      notes = " ".join(dict.fromkeys(f.sentence for f in facts)) or "No relevant facts yet."
      return op_table.tag(op_table.UPDATE_MEMORY, notes)
    if chunk is not None:
      return self._read(observation[chunk.end():], int(chunk.group(1)), observation[:chunk.start()], shown)
    # The answer view states the current question first (the query line further down may quote another one).
    question = min(self._questions_in(observation),
                   key=lambda q: (observation.find(q.record.question), -len(q.record.question)))
    if not self.has_storage:
      visible = [f for f in question.facts if f.sentence in observation]
      answer = derive_answer(question.kind, visible) if len(visible) == len(question.facts) else "unknown"
      return op_table.tag(op_table.FINAL_ANSWER, f"\\boxed{{{answer}}}")
    return self._answer(question, shown, scratchpad)

  def _read(self, chunk_text: str, chunk_number: int, header: str, shown: Sequence[str]) -> str:
    facts = []
    for question in self._questions_in(header):
      for fact in question.facts:
        if fact.sentence in chunk_text and fact.sentence not in shown and fact not in facts:
          facts.append(fact)
    if not facts:
      return f"Chunk {chunk_number} holds nothing for the questions; moving on."
    # Facts first, in reasoning order, so each is copied while its question is the freshest context; the
    # scratchpad then records only the progress.
    notes = [fact.sentence for fact in facts] + self._extra_note(chunk_text, header, [f.sentence for f in facts])
    adds = "".join(op_table.tag(op_table.ADD_MEMORY, note) for note in notes)
    return adds + op_table.tag(op_table.UPDATE_MEMORY, f"Chunk {chunk_number}: stored {len(notes)} facts.")

  def _extra_note(self, chunk_text: str, header: str, stored: Sequence[str]) -> list[str]:
    """With probability `extra_notes`, one sentence of the chunk the questions do not need (else none)."""
    if not self.extra_notes:
      return []
    rng = random.Random(zlib.crc32(f"{self.seed}|{header}|{chunk_text}".encode()))
    others = [s.strip() for s in _SENTENCE_RE.findall(chunk_text) if s.strip() not in stored]
    if not others or rng.random() >= self.extra_notes:
      return []
    return [rng.choice(others)]

  def _answer(self, question: SyntheticQuestion, shown: Sequence[str], scratchpad: str) -> str:
    visible = [f for f in question.facts if any(f.sentence in entry for entry in shown) or f.sentence in scratchpad]
    missing = [f for f in question.facts if f not in visible]
    if not missing:
      # The facts first, in reasoning order: each step of the chain is then a lookup in view, and the answer is
      # the last word just written.
      reasoning = " ".join(f.sentence for f in question.facts)
      return reasoning + op_table.tag(op_table.FINAL_ANSWER, f"\\boxed{{{derive_answer(question.kind, visible)}}}")
    keep = " ".join(f.sentence for f in visible) or "Looking for the facts."
    return op_table.tag(op_table.UPDATE_MEMORY, keep) + op_table.tag(op_table.UPDATE_QUERY, missing[0].sentence)


def derive_answer(kind: str, facts: Sequence[Fact]) -> str:
  if kind == "earlier":
    return min(facts, key=lambda f: int(f.object)).subject
  return facts[-1].object


def oracle_sft_pairs(trajectories: Sequence[Trajectory], tokenizer: Any, *, min_reward: float = 0.5,
                     append_eos: bool = True) -> list[dict[str, str]]:
  """Every turn of every trajectory with reward >= `min_reward` as {"prompt", "completion"}.

  The prompt is the chat-formatted observation exactly as the model saw it; the completion is the response followed
  by the eos token's text (so it encodes to the response ids the model should produce, ending in eos). The data
  pipeline appends eos only where it is missing; pass `append_eos=False` for a consumer that always appends it.
  """
  pairs = []
  eos = tokenizer.eos_token if append_eos else ""
  for trajectory in trajectories:
    if trajectory.reward < min_reward:
      continue
    for turn in trajectory.turns:
      pairs.append({"prompt": turn.prompt, "completion": turn.response + eos})
  return pairs
