"""The steps of project.yml: preflight, corpus, train, evaluate (and its report), package_meta, export_encoder."""
