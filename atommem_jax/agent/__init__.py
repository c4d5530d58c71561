"""The AtomMem agent: protocol, environments, the rollout engine, rewards, oracle.

Public API:
  config.AgentConfig                      -- environment, method, chunking (released | stride windows, middle | tail
                                             truncation), step cap, query limit, ablations, reward (by name)
  config.RolloutConfig                    -- agent + memory config, G samples per episode, seed
  protocol.parse_response(text, shown)    -- response -> ops in order (grammar in the module docstring), never raises
  protocol.Templates.load(dir)            -- prompt files (`${name}` placeholders); ours are in agent/templates/
  protocol.chat_prompt(tokenizer, s, u)   -- system + user message (+ tools) through the tokenizer's chat template
  envs.base.Environment                   -- the interface an environment implements (episodes, prepare, init_state,
                                             initial_queries, params, step, done, observe, parse, act, max_turns)
  envs.make(agent_config)                 -- the environment `agent_config.env` names (`envs.ENVIRONMENTS`)
  envs.long_context                       -- the long-context reader: Episode, chunk_document, EnvState, EnvParams,
                                             step (pure), METHODS (atommem, memagent, rag, full_context)
  engines.host.rollout(episodes, policy, ...)  -- B episodes x G samples to the end -> list[trajectory.Trajectory]
  transition.transition                   -- one jitted turn: the environment's step, accepted memory ops, retrieval
  transition.transition_with_tier         -- the same, returning what the host storage tier needs (spill="scann")
  memory_tiers.TieredMemory               -- the host side of a spilling memory: merged views, "Memory i" routing
  policy.SamplerPolicy(sampler)           -- the model as policy; any `policy(list[str]) -> list[str]` also works
  rewards.REWARDS, by_name, for_agent     -- injected `reward_fn(trajectory) -> float`s by name: "per_question"
                                             (the default), "released_union" (every answer against all golds)
  trajectory.Turn, Trajectory, write_jsonl  -- what an engine returns; trajectories a person can read
  memory_view                             -- the memory state as the text an observation shows
  oracle.OraclePolicy, oracle_sft_pairs   -- scripted policy for the synthetic task; its turns as SFT pairs
Transcript replay: `python -m atommem_jax.replay --transcript FILE.json`.
"""
