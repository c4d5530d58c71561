"""`python -m atommem_jax.bench {forward,decode,memory,rollout,attention,web,long_eval,parser} --json`: speed against the
alternative a user picks."""
import importlib
import json
import sys

SUITES = {
    "forward": "atommem_jax.bench.forward",
    "decode": "atommem_jax.bench.decode",
    "memory": "atommem_jax.bench.memory",
    "rollout": "atommem_jax.bench.rollout",
    "attention": "atommem_jax.bench.attention",
    "web": "atommem_jax.bench.web",
    "long_eval": "atommem_jax.bench.long_eval",
    "parser": "atommem_jax.bench.parser",
}


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in SUITES:
    sys.exit(f"usage: python -m atommem_jax.bench {{{','.join(SUITES)}}} [--json] [suite flags]")
  suite = importlib.import_module(SUITES[argv[1]])
  result = suite.run(argv[2:])
  if "--json" in argv:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f"{key}: {value}")


if __name__ == "__main__":
  main(sys.argv)
