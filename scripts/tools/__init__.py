"""Tools people run on their own text with the trained pipeline: annotate, annotate at scale on Ray Data, serve.

Each is a CLI over its engine: scripts.annotation for the first two, scripts.serving for serve."""
