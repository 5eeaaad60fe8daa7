"""Every knob of one fine-tuning run (``training.finetune``), recorded in the model's ``metadata.json``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FinetuneConfig:
    """Every knob of one run (recorded in ``metadata.json``)."""

    warmup_epochs: int = 2
    epochs: int = 12  # fine-tuning epochs after the warm-up (0: head only)
    learning_rate: float = 1e-2  # head warm-up, Adam, cosine decay
    finetune_learning_rate: float = 2e-4  # fine-tuning, Adam, one epoch linear warm-up, cosine decay
    finetune_blocks: int = 8  # top MBConv blocks unfrozen (plus the 1x1 head conv)
    batch_size: int = 32
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    dropout: float = 0.2
    label_smoothing: float = 0.1
    patience: int = 4  # early stopping: epochs without a better validation loss
    class_weights: bool = True  # single-label only
    # Augmentation of the training split only.
    flip: str = "horizontal"  # none | horizontal | vertical | both
    crop_min: float = 0.7  # random square crops of this..1 x the image's centre square
    color_jitter: float = 0.4  # 0 = off; scales brightness/contrast/saturation/hue jitter
    erasing: float = 0.25  # probability of one random-noise rectangle per image
    input_size: int = 0  # 0: the parent model's; smaller trains faster on low-resolution sources
    # Start from the base version's own model.keras and head (training.warm_start), not ImageNet's weights.
    warm_start: bool = False
    verbose: int = 1  # Keras: 1 = progress bar, 2 = one line per epoch, 0 = silent
