"""grain pipelines: epoch shuffling, exact resume (also through Orbax, across epochs), SFT batches, sharding."""
import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from atommem_jax import atomic_files
from atommem_jax.data import long_context, pipeline, synthetic
from atommem_jax.data.records import DataFormatError
from atommem_jax.data.tokenizer import load_tiny_tokenizer

NUM_EXAMPLES = 10


@pytest.fixture(scope="module")
def tok():
  return load_tiny_tokenizer()


@pytest.fixture(scope="module")
def examples():
  corpus = synthetic.generate(synthetic.SyntheticConfig(seed=3, num_documents=24, num_questions=NUM_EXAMPLES)).corpus()
  return long_context.build_examples(corpus, long_context.LongContextConfig(num_docs=6, seed=0))


def _ids(batches):
  return [tuple(b.ids) for b in batches]


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_epochs_are_reshuffled_permutations(examples):
  config = pipeline.PipelineConfig(batch_size=5, seed=1, num_threads=0)
  stream = [i for batch in _take(iter(pipeline.rollout_dataset(examples, config)), 6) for i in batch.ids]
  epochs = [stream[i:i + NUM_EXAMPLES] for i in range(0, len(stream), NUM_EXAMPLES)]
  assert all(sorted(e) == sorted(x.id for x in examples) for e in epochs)
  assert len({tuple(e) for e in epochs}) == 3
  assert epochs[0] != [x.id for x in examples]
  other = pipeline.PipelineConfig(batch_size=5, seed=2, num_threads=0)
  assert _ids(_take(iter(pipeline.rollout_dataset(examples, other)), 2)) != [tuple(stream[:5]), tuple(stream[5:10])]


@pytest.mark.parametrize("num_threads,prefetch", [(0, 0), (2, 16)])  # the trainer's setting, and threaded
def test_resume_equals_uninterrupted_stream_across_epochs(examples, tok, num_threads, prefetch):
  config = pipeline.PipelineConfig(batch_size=3, seed=7, num_threads=num_threads, prefetch_buffer_size=prefetch)
  dataset = pipeline.rollout_dataset(examples, config, tok)
  reference = _take(iter(dataset), 12)  # 36 examples: 3.6 epochs of 10, batches straddle epoch ends
  for k in (2, 3, 7):  # batch 3 (examples 9-11) crosses the first epoch boundary
    interrupted = iter(dataset)
    _take(interrupted, k)
    state = json.loads(json.dumps(pipeline.iterator_state(interrupted)))  # the state is JSON-able
    resumed = iter(pipeline.rollout_dataset(examples, config, tok))
    pipeline.restore_iterator_state(resumed, state)
    rest = _take(resumed, 12 - k)
    assert _ids(rest) == _ids(reference[k:])
    for got, want in zip(rest, reference[k:]):
      assert all(np.array_equal(a, b) for a, b in zip(got.context_ids, want.context_ids))
  batch = reference[0]
  assert batch.contexts[0] == batch.examples[0].context
  assert tok.decode(batch.context_ids[0]) == batch.contexts[0]
  assert batch.context_ids[0].tolist() == tok(batch.contexts[0], add_special_tokens=False)["input_ids"]
  assert batch.context_ids[0].dtype == np.int32


def test_orbax_checkpoint_manager_round_trip(examples, tmp_path):
  config = pipeline.PipelineConfig(batch_size=4, seed=0, num_threads=0)
  reference = _ids(_take(iter(pipeline.rollout_dataset(examples, config)), 8))
  iterator = iter(pipeline.rollout_dataset(examples, config))
  _take(iterator, 3)  # 12 examples: past the first epoch
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(3, args=ocp.args.Composite(data=pipeline.orbax_save_args(iterator)))
    manager.wait_until_finished()
  resumed = iter(pipeline.rollout_dataset(examples, config))
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    assert manager.latest_step() == 3
    manager.restore(3, args=ocp.args.Composite(data=pipeline.orbax_restore_args(resumed)))
  assert _ids(_take(resumed, 5)) == reference[3:]


def test_finite_epochs_and_shards(examples):
  config = pipeline.PipelineConfig(batch_size=4, seed=0, num_epochs=2, num_threads=0)
  assert len(list(pipeline.rollout_dataset(examples, config))) == 5  # 20 examples, drop_remainder
  keep = pipeline.PipelineConfig(batch_size=4, seed=0, num_epochs=2, drop_remainder=False, num_threads=0)
  assert [len(b.ids) for b in pipeline.rollout_dataset(examples, keep)] == [4, 4, 4, 4, 4]
  whole = [i for b in pipeline.rollout_dataset(examples, pipeline.PipelineConfig(
      batch_size=1, seed=0, num_epochs=1, num_threads=0)) for i in b.ids]
  shards = [[i for b in pipeline.rollout_dataset(examples, pipeline.PipelineConfig(
      batch_size=1, seed=0, num_epochs=1, shard_index=s, shard_count=2, num_threads=0)) for i in b.ids]
            for s in range(2)]
  assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


def _pairs(tok):
  prompts = [tok.apply_chat_template([{"role": "user", "content": f"Question {i}: who?" + " more" * i}],
                                     tokenize=False, add_generation_prompt=True) for i in range(6)]
  return [pipeline.SftPair(p, f"<add_memory>fact {i}</add_memory>", id=f"pair-{i}") for i, p in enumerate(prompts)]


def test_sft_batches(tok):
  pairs = _pairs(tok)
  lengths = [len(tok.encode(p.prompt, add_special_tokens=False)) for p in pairs]
  assert lengths == sorted(set(lengths))  # each prompt longer than the one before
  sft = pipeline.SftConfig(max_prompt_tokens=lengths[-1], max_completion_tokens=10)
  config = pipeline.PipelineConfig(batch_size=3, seed=0, num_threads=0)
  batches = _take(iter(pipeline.sft_dataset(pairs, config, sft, tok)), 4)
  seen = []
  for batch in batches:
    assert batch["prompt_ids_BxP"].shape == (3, lengths[-1]) and batch["completion_ids_BxC"].shape == (3, 10)
    for row in range(3):
      prompt_mask, completion_mask = batch["prompt_mask_BxP"][row], batch["completion_mask_BxC"][row]
      n_prompt, n_completion = prompt_mask.sum(), completion_mask.sum()
      assert prompt_mask[-n_prompt:].all() and completion_mask[:n_completion].all()  # left / right padding
      assert (batch["prompt_ids_BxP"][row][~prompt_mask] == tok.pad_token_id).all()
      prompt = tok.decode(batch["prompt_ids_BxP"][row][prompt_mask])
      completion_ids = batch["completion_ids_BxC"][row][completion_mask]
      assert completion_ids[-1] == tok.eos_token_id
      pair = next(p for p in pairs if p.prompt == prompt)
      assert tok.decode(completion_ids[:-1]) == pair.completion
      seen.append(pair.id)
  assert sorted(seen[:6]) == sorted(p.id for p in pairs)

  tight = pipeline.SftConfig(max_prompt_tokens=lengths[2], max_completion_tokens=10)
  with pytest.raises(ValueError, match=rf"SFT pair 'pair-\d': prompt \d+ tokens \(max {lengths[2]}\)"):
    list(pipeline.sft_dataset(pairs, pipeline.PipelineConfig(batch_size=1, num_epochs=1, num_threads=0), tight, tok))
  dropping = pipeline.SftConfig(max_prompt_tokens=lengths[2], max_completion_tokens=10, on_overlong="drop")
  kept = list(pipeline.sft_dataset(pairs, pipeline.PipelineConfig(batch_size=1, num_epochs=1, num_threads=0),
                                   dropping, tok))
  assert len(kept) == 3  # the three shortest prompts fit, the three longer do not
  assert all(b["prompt_mask_BxP"].sum() <= lengths[2] for b in kept)


def test_read_examples_from_build_output(examples, tmp_path):
  path = tmp_path / "examples.jsonl"
  atomic_files.write_jsonl(path, [e.to_json() for e in examples])
  assert pipeline.read_examples(str(path)) == examples
  path.write_text(path.read_text() + '{"id": "broken"}\n')
  with pytest.raises(DataFormatError, match=rf"examples\.jsonl: line {NUM_EXAMPLES + 1}: not a long-context"):
    pipeline.read_examples(str(path))
