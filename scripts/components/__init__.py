"""What spaCy registers and the packaged wheel ships: the encoder_backend component, the training reader and batcher, the training logger."""
