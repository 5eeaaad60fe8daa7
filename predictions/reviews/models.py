"""Reviews: an owner's confirmation or correction of a succeeded prediction."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from ..registry.models import ModelVersion


class Correction(models.Model):
    """The owner's review of a succeeded prediction: the right label, either a correction
    (the model was wrong) or a confirmation (``confirmed``: the model was right, and
    ``label`` / ``class_id`` are its own).

    A row of its own rather than fields on Prediction: the model's answer stays as it
    was (history, stats and the result cache keep reading it), nothing the worker writes
    can overwrite the user's label, and the next fine-tune's dataset is one query. One
    per prediction (one-to-one), so a prediction has at most one review: a later
    correction or confirmation replaces the earlier, whichever kind each is. Live top-1
    is confirmed / reviewed.

    A correction names one of the model's classes (``class_id`` set) unless the owner
    said explicitly that it is a class the model does not have (``new_class``): free
    text never reaches the training data unmarked.
    """

    prediction = models.OneToOneField("predictions.Prediction", on_delete=models.CASCADE, related_name="correction")
    confirmed = models.BooleanField(
        default=False, help_text="The owner confirmed the model's own label (else corrected it)"
    )
    label = models.CharField(max_length=200, help_text="The right label, as the model's class label or new text")
    class_id = models.CharField(
        max_length=20, blank=True, help_text="The model class the label matches; empty for a new class"
    )
    new_class = models.BooleanField(
        default=False,
        help_text="The owner said the right label is a class the model does not have (it is not one of its classes)",
    )
    predicted_label = models.CharField(
        max_length=200, blank=True, help_text="What the model said when it was corrected"
    )
    model_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
        help_text="The version that made the corrected prediction",
    )
    corrected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["model_version", "label"], name="correction_model_label")]
        constraints = [
            models.CheckConstraint(condition=~models.Q(label=""), name="correction_label_not_empty"),
            # A confirmation says the model's answer was right: its label is that answer.
            models.CheckConstraint(
                condition=models.Q(confirmed=False) | models.Q(label=models.F("predicted_label")),
                name="correction_confirmed_is_predicted_label",
            ),
            # A new class is a correction to a label that is none of the model's classes.
            models.CheckConstraint(
                condition=models.Q(new_class=False) | models.Q(confirmed=False, class_id=""),
                name="correction_new_class_has_no_class_id",
            ),
        ]
        verbose_name = "review"

    def __str__(self) -> str:
        if self.confirmed:
            return f"{self.label} (confirmed)"
        return f"{self.predicted_label or '?'} -> {self.label}{' (new class)' if self.new_class else ''}"
