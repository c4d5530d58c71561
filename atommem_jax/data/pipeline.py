"""grain input pipelines: long-context examples for rollouts and tokenized (prompt, completion) pairs for SFT.

Both are `records -> per-epoch shuffle -> repeat -> shard -> tokenize -> batch`, as a grain `IterDataset`. Its
iterator's position is a small JSON-able dict (`iterator.get_state()`), and restoring it continues with exactly the
batches the uninterrupted iterator would have produced next, across epoch boundaries too (each epoch's order is a
function of the seed and the epoch number).

Checkpointing with Orbax, next to the train state in one CheckpointManager:

  iterator = iter(rollout_dataset(examples, config, tokenizer))
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=orbax_save_args(iterator)))
  ...
  manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                data=orbax_restore_args(iterator)))  # restores `iterator` in place

(`iterator_state` / `restore_iterator_state` are the same pair for trainers that store the dict themselves.)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Sequence

import grain
import numpy as np

from atommem_jax import atomic_files
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.data.records import DataFormatError


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Order, batching and sharding of a pipeline.

  Attributes:
    batch_size: examples per batch on this process.
    seed: the shuffle seed; epoch e is shuffled with a seed derived from (seed, e).
    num_epochs: passes over the data; None repeats forever.
    drop_remainder: drop the last short batch (only reachable with a finite num_epochs).
    shard_index: this process's shard (`jax.process_index()` in multi-host runs).
    shard_count: the number of shards (`jax.process_count()`).
    num_threads: grain reader threads (0 reads on the consuming thread).
    prefetch_buffer_size: elements read ahead.
  """

  batch_size: int = 8
  seed: int = 0
  num_epochs: int | None = None
  drop_remainder: bool = True
  shard_index: int = 0
  shard_count: int = 1
  num_threads: int = 1
  prefetch_buffer_size: int = 16

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if not 0 <= self.shard_index < self.shard_count:
      raise ValueError(f"need 0 <= shard_index < shard_count, got {self.shard_index}, {self.shard_count}")


@dataclasses.dataclass(frozen=True)
class SftConfig:
  """Shapes of tokenized SFT batches (fixed, so the train step compiles once).

  Attributes:
    max_prompt_tokens: prompts are left-padded to this length (the batching convention for prompts).
    max_completion_tokens: completions (with the eos token appended) are right-padded to this length.
    on_overlong: a pair that does not fit is an error naming it ("error") or is left out ("drop").
    append_eos: end every completion with the tokenizer's eos token, so the model learns to stop.
  """

  max_prompt_tokens: int = 4096
  max_completion_tokens: int = 1024
  on_overlong: Literal["error", "drop"] = "error"
  append_eos: bool = True

  def __post_init__(self):
    if self.on_overlong not in ("error", "drop"):
      raise ValueError(f"on_overlong must be 'error' or 'drop', got {self.on_overlong!r}")


@dataclasses.dataclass(frozen=True)
class SftPair:
  """One SFT example: a chat-formatted prompt (ending with the assistant header) and the response to learn."""

  prompt: str
  completion: str
  id: str = ""


@dataclasses.dataclass(frozen=True)
class RolloutBatch:
  """Examples for one rollout step; `context_ids[i]` is example i's context tokenized (ragged, int32)."""

  examples: tuple[LongContextExample, ...]
  context_ids: tuple[np.ndarray, ...] | None

  @property
  def ids(self) -> list[str]:
    return [e.id for e in self.examples]

  @property
  def contexts(self) -> list[str]:
    return [e.context for e in self.examples]

  @property
  def questions(self) -> list[tuple[str, ...]]:
    return [e.questions for e in self.examples]

  @property
  def answers(self) -> list[tuple[tuple[str, ...], ...]]:
    return [e.answers for e in self.examples]


def read_examples(path: str) -> list[LongContextExample]:
  """Examples from a JSONL file written by `python -m atommem_jax.data.build`."""
  examples = []
  for line_no, row in atomic_files.read_jsonl(path, DataFormatError):
    try:
      examples.append(LongContextExample.from_json(row))
    except (KeyError, TypeError, ValueError) as e:
      raise DataFormatError(f"{path}: line {line_no}: not a long-context example ({type(e).__name__}: {e})") from None
  if not examples:
    raise DataFormatError(f"{path}: file holds no examples")
  return examples


def _ordered(records: Sequence[Any], config: PipelineConfig) -> grain.MapDataset:
  if not records:
    raise ValueError("a pipeline needs at least one record")
  dataset = grain.MapDataset.source(list(records)).shuffle(seed=config.seed).repeat(config.num_epochs)
  if config.shard_count > 1:
    dataset = dataset.slice(slice(config.shard_index, None, config.shard_count))
  return dataset


def _to_iter(dataset: grain.MapDataset, config: PipelineConfig) -> grain.IterDataset:
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=config.num_threads,
                                                   prefetch_buffer_size=config.prefetch_buffer_size))


def _encoder(tokenizer: Any) -> Callable[[str], list[int]]:
  """Text -> ids without special tokens, safe to call from several grain reader threads at once."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:
    # The Rust tokenizer encodes concurrently; the Python wrapper resets its padding / truncation state on every
    # call, which fails ("Already borrowed") when two threads do it at once.
    return lambda text: backend.encode(text, add_special_tokens=False).ids
  return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def rollout_dataset(examples: Sequence[LongContextExample], config: PipelineConfig,
                    tokenizer: Any | None = None) -> grain.IterDataset:
  """Batches of long-context examples; with a tokenizer each batch also carries the tokenized contexts."""

  encode = None if tokenizer is None else _encoder(tokenizer)

  def tokenize(example: LongContextExample) -> tuple[LongContextExample, np.ndarray | None]:
    if encode is None:
      return example, None
    return example, np.asarray(encode(example.context), dtype=np.int32)

  def collate(items: Sequence[tuple[LongContextExample, np.ndarray | None]]) -> RolloutBatch:
    return RolloutBatch(examples=tuple(e for e, _ in items),
                        context_ids=None if tokenizer is None else tuple(ids for _, ids in items))

  dataset = _to_iter(_ordered(examples, config).map(tokenize), config)
  return dataset.batch(config.batch_size, drop_remainder=config.drop_remainder, batch_fn=collate)


def sft_dataset(pairs: Sequence[SftPair], config: PipelineConfig, sft: SftConfig,
                tokenizer: Any) -> grain.IterDataset:
  """Batches of `{prompt_ids_BxP, prompt_mask_BxP, completion_ids_BxC, completion_mask_BxC}` numpy arrays.

  Prompts are left-padded and completions right-padded with the pad id; masks are True on real tokens.
  """
  pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
  encode = _encoder(tokenizer)

  def tokenize(pair: SftPair) -> tuple[np.ndarray, np.ndarray] | None:
    prompt = encode(pair.prompt)
    completion = encode(pair.completion)
    if sft.append_eos and (not completion or completion[-1] != eos_id):
      completion = completion + [eos_id]
    if len(prompt) > sft.max_prompt_tokens or len(completion) > sft.max_completion_tokens:
      if sft.on_overlong == "drop":
        return None
      raise ValueError(f"SFT pair {pair.id!r}: prompt {len(prompt)} tokens (max {sft.max_prompt_tokens}), "
                       f"completion {len(completion)} tokens (max {sft.max_completion_tokens})")
    return np.asarray(prompt, np.int32), np.asarray(completion, np.int32)

  def collate(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    batch = len(items)
    prompt_ids_BxP = np.full((batch, sft.max_prompt_tokens), pad_id, np.int32)
    completion_ids_BxC = np.full((batch, sft.max_completion_tokens), pad_id, np.int32)
    prompt_mask_BxP = np.zeros((batch, sft.max_prompt_tokens), bool)
    completion_mask_BxC = np.zeros((batch, sft.max_completion_tokens), bool)
    for row, (prompt, completion) in enumerate(items):
      prompt_ids_BxP[row, sft.max_prompt_tokens - len(prompt):] = prompt
      prompt_mask_BxP[row, sft.max_prompt_tokens - len(prompt):] = True
      completion_ids_BxC[row, :len(completion)] = completion
      completion_mask_BxC[row, :len(completion)] = True
    return {"prompt_ids_BxP": prompt_ids_BxP, "prompt_mask_BxP": prompt_mask_BxP,
            "completion_ids_BxC": completion_ids_BxC, "completion_mask_BxC": completion_mask_BxC}

  # Dropped pairs become None in the map stage; the conversion to an IterDataset skips them before batching.
  dataset = _to_iter(_ordered(pairs, config).map(tokenize), config)
  return dataset.batch(config.batch_size, drop_remainder=config.drop_remainder, batch_fn=collate)


def iterator_state(iterator: grain.DatasetIterator) -> dict[str, Any]:
  """The iterator's position as a JSON-able dict."""
  return iterator.get_state()


def restore_iterator_state(iterator: grain.DatasetIterator, state: dict[str, Any]) -> None:
  """Moves a fresh iterator of the same pipeline to `state`; it then yields what the saved one would have."""
  iterator.set_state(state)


def orbax_save_args(iterator: grain.DatasetIterator) -> Any:
  """The Orbax `CheckpointArgs` that save `iterator`'s position (one JSON file per process)."""
  import grain.checkpoint  # pylint: disable=g-import-not-at-top
  return grain.checkpoint.CheckpointSave(iterator)


def orbax_restore_args(iterator: grain.DatasetIterator) -> Any:
  """The Orbax `CheckpointArgs` that restore a saved position into `iterator` (in place)."""
  import grain.checkpoint  # pylint: disable=g-import-not-at-top
  return grain.checkpoint.CheckpointRestore(iterator)
