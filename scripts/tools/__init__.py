"""Tools people run on their own text with the trained pipeline: annotate, and annotate at scale on Ray Data."""
