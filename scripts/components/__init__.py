"""What spaCy registers and the packaged wheel ships.

The encoder_backend component, the training reader and batcher, the training logger.
"""
