"""imagerec's machine-learning code, without Django: the only package that imports
TensorFlow (and only when a model is loaded).

- ``preprocessing``: decode and resize exactly as the model was trained (Pillow only).
- ``engines``: SavedModel ``serve`` signature, TFLite and ONNX Runtime behind one interface.
- ``export``: reading an exported model folder (``metadata.json``, ``labels.json``).
- ``runner``: ``Classifier``, decode -> preprocess -> predict -> top-k.
- ``uncertainty``: entropy, margin and the "Not sure" thresholds.
- ``gradcam``: where the model looked for a class.
- ``cache``: the one per-process cache of loaded versions, released by the worker's heartbeat.

The Celery workers (``predictions``) and ``training/`` import it; it imports neither.
"""
