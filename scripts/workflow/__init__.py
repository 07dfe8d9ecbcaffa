"""The steps of project.yml: corpus, train, evaluate, package (and the CPU workflow's encoder)."""
