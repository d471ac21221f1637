"""From a trained run to answers: load it and predict (``run``), export it (``export``, ``onnx``)."""
