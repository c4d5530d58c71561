"""The SFT stage's pairs: the oracle's trajectories on many worlds, and recitation pairs."""
import pytest

from atommem_jax.agent.config import AgentConfig
from atommem_jax.data import synthetic
from atommem_jax.data.long_context import LongContextConfig
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.train import oracle_pairs, task_split
from atommem_jax.train.config import SFTStageConfig, TaskConfig, TrainConfig

SMALL_WORLD = synthetic.SyntheticConfig(seed=3, num_documents=16, num_questions=4, question_kinds=("birth_country",))


def test_the_oracle_answers_every_episode_of_many_worlds(tmp_path):
  agent = AgentConfig(chunk_tokens=96, overlap_tokens=8, max_chunks=8, max_steps=6, template_dir="compact")
  memory = MemoryConfig(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4)
  task = task_split.split_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=30, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  config = TrainConfig(task=TaskConfig(), agent=agent, memory=memory, sft=SFTStageConfig(oracle_episodes=100))
  pairs = oracle_pairs.sft_pairs(config, task, load_tiny_tokenizer(), HashingEmbedder(memory.embed_dim), tmp_path)
  answers = [p.completion for p in pairs if "final_answer" in p.completion]
  assert len(answers) == 100  # every trajectory reached reward 1 (the pairs keep trajectories >= min_reward)
  assert (tmp_path / oracle_pairs.SFT_PAIRS_FILE).exists()


def test_extra_note_pairs_come_from_their_own_file_when_they_start_later(tmp_path):
  """`oracle_extra_notes_from` > 0: the pairs before it are the plain oracle's, `later=True` the extra-note ones."""
  agent = AgentConfig(chunk_tokens=96, overlap_tokens=8, max_chunks=8, max_steps=6, template_dir="compact")
  memory = MemoryConfig(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4)
  task = task_split.split_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=10, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  stored = lambda pairs: [p.completion.count("<add_memory>") for p in pairs if "<add_memory>" in p.completion]
  make = lambda sft, later=False, workdir=tmp_path: oracle_pairs.sft_pairs(
      TrainConfig(task=TaskConfig(), agent=agent, memory=memory, sft=sft), task, load_tiny_tokenizer(),
      HashingEmbedder(memory.embed_dim), workdir, later=later)
  staged = SFTStageConfig(oracle_episodes=20, oracle_extra_notes=1.0, oracle_extra_notes_from=5)
  assert oracle_pairs.has_later_pairs(staged)
  assert set(stored(make(staged))) == {2}  # both facts, nothing else
  assert set(stored(make(staged, later=True))) == {3}  # and one note the question does not need
  assert (tmp_path / oracle_pairs.SFT_LATER_PAIRS_FILE).exists()
  from_start = SFTStageConfig(oracle_episodes=20, oracle_extra_notes=1.0)
  assert not oracle_pairs.has_later_pairs(from_start)
  assert set(stored(make(from_start, workdir=tmp_path / "from_start"))) == {3}
  with pytest.raises(ValueError, match="later SFT pairs"):
    make(from_start, later=True, workdir=tmp_path / "from_start")
  with pytest.raises(ValueError, match="oracle_extra_notes"):
    SFTStageConfig(oracle_extra_notes=1.5)


def test_recitation_pairs_state_each_sentence_of_the_prompt_once():
  task = task_split.split_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=3, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  tokenizer = load_tiny_tokenizer()
  pairs = oracle_pairs.recitation_pairs(task.train_examples, tokenizer, seed=0)
  assert len(pairs) == len(task.train_examples)
  orders = set()
  for pair, example in zip(pairs, task.train_examples):
    assert pair["prompt"].startswith(f"<|im_start|>system\n{oracle_pairs.RECITE_SYSTEM}")
    assert example.context in pair["prompt"]
    assert pair["completion"].endswith(tokenizer.eos_token)
    stated = pair["completion"].removesuffix(tokenizer.eos_token).split(". ")
    stated = [s if s.endswith(".") else s + "." for s in stated]
    expected = [s if s.endswith(".") else s + "." for d in example.documents for s in d.text.split(". ")]
    assert sorted(stated) == sorted(expected)
    orders.add(stated == expected)
  assert False in orders  # shuffled, not merely copied in order
