"""Evaluation from checkpoints (loaded by `checkpoint.loader`), result tables, and plots.

Public API:
  config.EvalConfig, config.eval_config_from_dict(config_dict)   the run (datasets x N, variants, decoding, mesh)
  runner.evaluate(config, workdir, *, devices=None, progress=True) -> {name: path}
      writes trajectories.jsonl, results.json, results.md; inputs are all checked before anything is written
  runner.EvalError                                                 a bad evaluation input (names file / key / value)
  results.EpisodeResult, results.summarize(episodes), results.markdown_report(rows, checkpoint=...)
  plots.write_training_plots(metrics_jsonl, out_dir, smoothing=0.0) -> [png paths]
  plots.plot_em_vs_documents(summary_rows, out_dir), plots.read_metrics(path), plots.MetricsError

Entry points: `python -m atommem_jax.evaluate --config experiments/eval_hotpot.py[:tiny] --config.checkpoint=DIR
--workdir OUT` and `python -m atommem_jax.plot --workdir RUN`.
"""
