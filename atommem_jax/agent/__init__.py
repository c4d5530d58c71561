"""The AtomMem agent: protocol, long-context environment, batched multi-turn rollout, baselines, oracle.

Public API:
  config.AgentConfig                      -- chunking, step cap, query limit and its action, method, ablations
  protocol.parse_response(text, shown)    -- response -> ops in order (grammar in the module docstring), never raises
  protocol.Templates.load(dir)            -- prompt files (`${name}` placeholders); ours are in agent/templates/
  protocol.chat_prompt(tokenizer, s, u)   -- system + user message through the tokenizer's chat template
  env.EnvState, env.init_env,             -- per-trajectory pointers as a pytree; the turn as a pure function
  env.env_step, env.chunk_document           (state, op kinds, op validity) -> (state, accepted ops, answers)
  rollout.Episode, rollout.RolloutConfig  -- one document and its questions; agent + memory config, G, seed
  rollout.rollout(episodes, policy, ...)  -- B episodes x G samples to the end -> list[rollout.Trajectory]
  rollout.SamplerPolicy(sampler)          -- the model as policy; any `policy(list[str]) -> list[str]` also works
  rollout.write_jsonl                     -- trajectories a person can read
  oracle.OraclePolicy, oracle_sft_pairs   -- scripted policy for the synthetic task; its turns as SFT pairs
Transcript replay: `python -m atommem_jax.replay --transcript FILE.json`.
"""
