"""What the rooms share: CoNLL reading and writing, scoring, reports, preflight checks, the reader of a training run,
pipeline loading with its options, atomic writes, and how a CLI fails."""
