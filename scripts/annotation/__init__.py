"""The annotation engines behind the `annotate` and `annotate_ray` CLIs (scripts/tools/):

- `local`: lines of text or JSONL in, JSONL with entity offsets out, streamed through `nlp.pipe`
  on this machine; its reading and checks are the Ray engine's too;
- `ray_data`: the same rows on Ray Data: the pipeline in an actor pool, JSONL or Parquet shards
  staged and published only when complete.

Neither imports a CLI or anything of scripts.tools (tests/test_layout.py checks it).
"""
