"""The environment interface: a toy environment written here alone runs through the host engine, with its own
observations, step, an action run on the host between turns, and an injected reward; environments by name."""
import dataclasses
import re
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax import configlib, op_table
from atommem_jax.agent import envs, protocol, rewards
from atommem_jax.agent.config import AgentConfig, Method, Reward, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.envs.base import Observation, Parsed, StepResult
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder

MEMORY = MemoryConfig(capacity=4, entry_tokens=16, scratchpad_tokens=16, query_tokens=16, embed_dim=32, top_k=2,
                      max_ops_per_turn=4)


@dataclasses.dataclass(frozen=True)
class CountEpisode:
  id: str
  text: str  # words; every `CountChunks.words_per_chunk` of them make a chunk
  questions: tuple[str, ...] = ("How many chunks were there?",)

  @property
  def answers(self):
    return ((str(len(_chunks(self.text))),),)


def _chunks(text):
  words = text.split()
  return [" ".join(words[i:i + CountChunks.words_per_chunk]) for i in range(0, len(words), CountChunks.words_per_chunk)]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CountState:
  chunk_B: jax.Array
  num_chunks_B: jax.Array
  done_B: jax.Array


class CountChunks:
  """Count the chunks: one chunk shown per turn, then the question; the answer is the number of chunks. A response
  holding `[ask]` is an action; its result (the true count) is shown on the next turn."""

  words_per_chunk = 3
  max_turns = 10

  def __init__(self):
    self.acted = []

  def episodes(self, examples):
    return [CountEpisode(id=f"count-{i}", text=text) for i, text in enumerate(examples)]

  def prepare(self, episodes, tokenizer, embed_fn, memory_config):
    return [_chunks(episode.text) for episode in episodes]

  def init_state(self, episodes, contexts):
    num_chunks = jnp.asarray([len(c) for c in contexts], jnp.int32)
    return CountState(chunk_B=jnp.zeros_like(num_chunks), num_chunks_B=num_chunks,
                      done_B=jnp.zeros(num_chunks.shape, bool))

  def initial_queries(self, episodes):
    return None

  def params(self):
    return jnp.int32(self.max_turns)

  @staticmethod
  def step(state, turn, params):
    del params
    live_BxO = turn.valid_BxO & ~state.done_B[:, None]
    answer_BxO = live_BxO & jnp.asarray(op_table.IS_ANSWER_K)[turn.kind_BxO]
    first_answer_BxO = answer_BxO & (jnp.cumsum(answer_BxO, axis=1) == 1)
    accepted_BxO = live_BxO & (~answer_BxO | first_answer_BxO)
    reading_B = state.chunk_B < state.num_chunks_B
    chunk_B = state.chunk_B + (reading_B & ~state.done_B)
    done_B = state.done_B | answer_BxO.any(axis=1)
    return CountState(chunk_B=chunk_B, num_chunks_B=state.num_chunks_B, done_B=done_B), StepResult(
        accepted_BxO=accepted_BxO, answered_question_BxO=jnp.where(first_answer_BxO, 0, -1),
        act_B=turn.acted_B & ~state.done_B)

  def done(self, state):
    return np.asarray(state.done_B)

  def observe(self, episode, context, state, row, memory, previous):
    chunk = int(state.chunk_B[row])
    tool = f"\nTool said: {previous.result}" if previous is not None and previous.action is not None else ""
    user = (f"Chunk: {context[chunk]}" if chunk < len(context) else episode.questions[0]) + \
        f"\nCount so far: {memory.scratchpad or 0}{tool}"
    return Observation(system="Count the chunks.", user=user, phase="read" if chunk < len(context) else "answer",
                       chunk_index=chunk)

  def parse(self, response, memory, state, row):
    return Parsed(ops=protocol.parse_response(response, len(memory.entries)),
                  action={"name": "count"} if "[ask]" in response else None)

  def act(self, actions, contexts):
    self.acted.append(list(actions))
    return [len(chunks) for chunks in contexts]


def counting_policy(prompts):
  """Keeps the running count in the scratchpad; answers it once the question shows."""
  out = []
  for prompt in prompts:
    count = int(re.search(r"Count so far: (\d+)", prompt).group(1))
    if "Chunk: " in prompt:
      out.append(op_table.tag(op_table.UPDATE_MEMORY, str(count + 1)))
    else:
      out.append(op_table.tag(op_table.FINAL_ANSWER, f"\\boxed{{{count}}}"))
  return out


def asking_policy(prompts):
  """Asks the tool on the first turn (with a scratchpad write in the same response), answers what it said."""
  out = []
  for prompt in prompts:
    said = re.search(r"Tool said: (\d+)", prompt)
    if said:
      out.append(op_table.tag(op_table.FINAL_ANSWER, f"\\boxed{{{said.group(1)}}}"))
    else:
      out.append(op_table.tag(op_table.UPDATE_MEMORY, "asked") + " [ask]")
  return out


@pytest.fixture(scope="module")
def tokenizer():
  return load_tiny_tokenizer()


def _run(env, policy, tokenizer, texts, **kwargs):
  return host.rollout(env.episodes(texts), policy, tokenizer=tokenizer, embed_fn=HashingEmbedder(MEMORY.embed_dim),
                      config=RolloutConfig(memory=MEMORY, num_samples=2), env=env, **kwargs)


def test_a_toy_environment_defined_here_runs_through_the_host_engine(tokenizer):
  texts = ["a b c d e f g", "one two three four five six seven eight nine ten eleven twelve", "x"]
  trajectories = _run(CountChunks(), counting_policy, tokenizer, texts)
  assert [t.episode_id for t in trajectories] == ["count-0", "count-0", "count-1", "count-1", "count-2", "count-2"]
  assert [t.answers for t in trajectories] == [["3"]] * 2 + [["4"]] * 2 + [["1"]] * 2
  assert [t.reward for t in trajectories] == [1.0] * 6 and all(t.done for t in trajectories)
  first = trajectories[2]
  assert [turn.phase for turn in first.turns] == ["read"] * 4 + ["answer"]
  assert [turn.chunk_index for turn in first.turns] == [0, 1, 2, 3, 4]
  assert first.turns[1].observation == "Chunk: four five six\nCount so far: 1"  # the memory carried the count
  assert first.turns[-1].ops == [{"type": "final_answer", "text": "4", "target": 0, "valid": True, "reason": ""}]
  assert first.scratchpad == "4" and first.turns[0].action is None
  assert "action" not in first.to_json()["turns"][0]  # no action fields where no action ran


def test_actions_run_on_the_host_after_the_memory_ops_and_show_next_turn(tokenizer):
  env = CountChunks()
  trajectories = _run(env, asking_policy, tokenizer, ["a b c d e f g", "x y"])
  assert env.acted == [[{"name": "count"}] * 4]  # one call for the four rows, in one batch
  assert [t.answers for t in trajectories] == [["3"]] * 2 + [["1"]] * 2
  first_turn = trajectories[0].turns[0]
  assert (first_turn.action, first_turn.action_result) == ({"name": "count"}, 3)
  assert trajectories[0].to_json()["turns"][0]["action"] == {"name": "count"}
  assert "Tool said: 3" in trajectories[0].turns[1].observation
  assert trajectories[0].scratchpad == "asked"  # the response's memory op applied as well as its action


def test_the_reward_is_injected(tokenizer):
  trajectories = _run(CountChunks(), counting_policy, tokenizer, ["a b c d"],
                      reward_fn=lambda t: float(len(t.turns)))
  assert [t.reward for t in trajectories] == [3.0, 3.0]  # two chunks read, one answer


def test_format_penalty_lowers_the_reward_by_the_share_of_malformed_turns():
  turn = lambda invalid: types.SimpleNamespace(invalid_ops=invalid)
  right = types.SimpleNamespace(answers=["Nezu"], gold_answers=[["Nezu"]], turns=[turn(0), turn(2)])
  blank = types.SimpleNamespace(answers=[None], gold_answers=[["Nezu"]], turns=[turn(0), turn(0), turn(0)])
  broken = types.SimpleNamespace(answers=[None], gold_answers=[["Nezu"]], turns=[turn(1), turn(1), turn(0), turn(3)])
  penalised = rewards.by_name("per_question", format_penalty=0.5)
  assert [penalised(t) for t in (right, blank, broken)] == [0.75, 0.0, -0.375]
  assert rewards.score(penalised, [right, blank, broken]) == [0.75, 0.0, -0.375]
  assert rewards.by_name("per_question", format_penalty=0.0) is rewards.per_question_boxed_em
  with pytest.raises(ValueError, match="format_penalty"):
    AgentConfig(format_penalty=-0.1)


def test_environments_and_methods_are_chosen_by_name():
  env = envs.make(AgentConfig(method="rag"))
  assert env.max_turns == AgentConfig().max_steps and env.disabled_kinds == tuple(range(1, 6))
  assert envs.make(AgentConfig(method="memagent")).method is long_context.METHODS["memagent"]
  with pytest.raises(ValueError, match=r"AgentConfig.env 'browser' is not one of \['long_context', 'web'\]"):
    AgentConfig(env="browser")
  with pytest.raises(configlib.ConfigError, match="'memgpt' is not one of"):
    configlib.from_dict(AgentConfig, {"method": "memgpt"})
  assert typing.get_args(Method) == tuple(long_context.METHODS)
  assert typing.get_args(Reward) == tuple(rewards.REWARDS)


def test_an_environment_is_its_file(tmp_path):
  # Every module file of the package is an environment of its name: adding one is adding a file.
  assert envs.ENVIRONMENTS == {"long_context": "atommem_jax.agent.envs.long_context",
                               "web": "atommem_jax.agent.envs.web"}
  for name in ("base", "_helpers", "count_chunks", "web"):
    (tmp_path / f"{name}.py").write_text("")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "__init__.py").write_text("")
  assert envs.discover([str(tmp_path)], "pkg") == {"count_chunks": "pkg.count_chunks", "web": "pkg.web"}


# Which view renders which templates (the system prompt with either phase).
_TEMPLATES_OF = {"atommem": ("system", "read", "answer"),
                 "memagent": ("baseline_system", "memagent_read", "memagent_answer"),
                 "rag": ("baseline_system", "rag_answer"), "full_context": ("baseline_system", "full_context_answer")}


def test_every_template_renders_with_every_placeholder(tmp_path):
  assert {name for names in _TEMPLATES_OF.values() for name in names} == set(protocol.TEMPLATE_FIELDS)
  for name, fields in protocol.TEMPLATE_FIELDS.items():
    (tmp_path / f"{name}.txt").write_text(f"<{name}>" + "".join(f"[{f}=${{{f}}}]" for f in fields))
  episode = long_context.Episode(id="e", document="d", questions=("q one?", "q two?"), answers=(("a",), ("b",)))
  memory = envs.base.MemoryView(scratchpad="pad", query="find", entries=("note",))
  rendered = {}
  for method, names in _TEMPLATES_OF.items():
    env = envs.make(AgentConfig(method=method, template_dir=str(tmp_path), query_limit=5))
    document = long_context.EpisodeDocument(chunks=("chunk one", "chunk two"),
                                            answer_contexts=("ctx a", "ctx b") if not env.method.reads_document else ())
    state = long_context.initial_state([2 if env.method.reads_document else 0], [2])
    state = dataclasses.replace(state, query_count_B=jnp.asarray([2]), chunk_index_B=jnp.asarray([1]),
                                question_index_B=jnp.asarray([1]))
    phases = [state, dataclasses.replace(state, answer_phase_B=jnp.asarray([True]))]
    for phase in phases if env.method.reads_document else phases[1:]:
      observation = env.observe(episode, document, phase, 0, memory, None)
      for text in (observation.system, observation.user):
        rendered[text[1:text.index(">")]] = text
  assert set(rendered) == set(protocol.TEMPLATE_FIELDS)  # each template rendered at least once
  for name, text in rendered.items():
    values = dict(re.findall(r"\[(\w+)=([^\]]*)\]", text))
    assert set(values) == set(protocol.TEMPLATE_FIELDS[name]), name  # every placeholder got a value
    assert all(values.values()), (name, values)
  assert rendered["read"].count("[reads_in_a_row=2]") == 1 and "[query_limit=5]" in rendered["answer"]
  assert "[question_number=2][num_questions=2]" in rendered["memagent_answer"]
  assert "[chunk=chunk two][chunk_number=2][num_chunks=2]" in rendered["read"]
  assert "[context=ctx b]" in rendered["full_context_answer"] and "[chunks=ctx b]" in rendered["rag_answer"]
  # Every packaged variant loads (only known placeholders), and the released one shows the reads in a row.
  for variant in protocol.PACKAGED_VARIANTS:
    protocol.Templates.load(variant)
  assert "${reads_in_a_row}" in protocol.Templates.load("released").texts["read"]
  assert protocol.Templates.load("compact").texts["read"] == protocol.Templates.load().texts["read"]
