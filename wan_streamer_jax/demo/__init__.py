"""The whole job: corpus -> codecs -> tokens -> Transformer -> evaluation -> one streamed dialogue."""
