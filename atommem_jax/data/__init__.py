"""Data: native dataset readers, the long-context builder, the synthetic task, the tiny tokenizer, grain pipelines.

Public API (import the submodules; this package imports nothing heavy on its own):
  records.QARecord, records.Paragraph, records.Corpus, records.DataFormatError
      one question (id, question, answers, gold paragraphs, supporting-fact sentences) / a file's records + pool
  readers.read_dataset(name, path, ReaderConfig) with name in {hotpotqa, 2wiki, musique}; read_hotpotqa / _2wiki /
      _musique; ReaderConfig(on_bad_row="raise"|"skip", keep_unanswerable)
  long_context.LongContextConfig(num_docs, seed, single_question_fraction, min/max_bundle_size)
  long_context.build_examples(corpus, config) -> [LongContextExample]; LongContextExample.context / to_json /
      from_json; example_rng(seed, id)
  synthetic.SyntheticConfig, synthetic.generate(config) -> SyntheticTask(facts, documents, questions); .corpus()
  tokenizer.load_tiny_tokenizer(path=None), tokenizer.train_tiny_tokenizer(dir), tokenizer.tiny_tokenizer_dir(),
      PROTOCOL_TAGS, CHAT_TEMPLATE
  pipeline.rollout_dataset(examples, PipelineConfig, tokenizer=None) -> grain IterDataset of RolloutBatch
  pipeline.sft_dataset(pairs, PipelineConfig, SftConfig, tokenizer) -> grain IterDataset of padded numpy dicts
  pipeline.iterator_state / restore_iterator_state / orbax_save_args / orbax_restore_args; read_examples(path)

Command lines:
  python -m atommem_jax.data.build --dataset hotpotqa|2wiki|musique|synthetic --input PATH --num_docs N --seed S
      --output OUT.jsonl
  python -m atommem_jax.data.tokenizer [--output DIR]     (regenerates assets/tiny_tokenizer byte for byte)
"""
