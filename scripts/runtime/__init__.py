"""The pipeline's runtime: the code the wheel ships beside the weights, so that `spacy.load("en_bert_ner")` works
with no part of this project installed.

`spacy package --build none` writes the package, then scripts.workflow.package_runtime copies these
modules into it (next to spaCy's __init__.py, which imports the two components) and builds the wheel.
They import one another relatively and nothing else of the project, so they work both here, as
scripts.runtime (the project's entry points register the components from here), and in the wheel, as
en_bert_ner.*.

- backends.py: the backends' names, the components' names and settings, their error (no torch import).
- encoder_backend.py: the `encoder_backend` component: the backend put in place as the pipeline loads.
- entity_scores.py: the `entity_scores` component: a calibrated probability for each entity.
- action_scores.py: the one link between the two: the greedy NER's score rows on each Doc.
- internals.py: every use of spaCy's and spacy-transformers' internals, checked as the pipeline loads.
- torch_int8.py: the `torch-int8` backend (PyTorch dynamic quantization).
- onnx_export.py: the ONNX graphs: export, int8 copy, cache. onnx_encoder.py: ONNX Runtime in the torch module's place.
- wordpieces.py: tokenization and alignment of a whole batch in numpy.
- batched_inference.py: spacy-transformers' inference batch by batch (encoder calls, pooling, annotations).
- greedy_ner.py: the NER's greedy decoding from Python, keeping its score rows.
- fork_safety.py: fork handlers for nlp.pipe(n_process=N). registration.py: registering from either copy.
"""
