from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from .models import PredictionStatus


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several files under one field name; each is validated by the service layer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*", "multiple": True}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any | None = None) -> list[UploadedFile[bytes]]:
        files = data if isinstance(data, list | tuple) else [data]
        files = [f for f in files if f]
        if not files:
            raise forms.ValidationError("Choose at least one image to upload.")
        return files


class UploadForm(forms.Form):
    images = MultipleImageField(label="Images")
    top_k = forms.IntegerField(
        label="Guesses to show", min_value=1, max_value=settings.MAX_TOP_K, initial=settings.DEFAULT_TOP_K
    )


class HistoryFilterForm(forms.Form):
    """The history's filters, all in the URL (``?label=cat&view=list``) so a filtered
    gallery can be bookmarked, shared and returned to."""

    label = forms.CharField(
        required=False,
        label="Label",
        help_text="the model's, or yours where you corrected it",
        widget=forms.TextInput(attrs={"type": "search", "aria-describedby": "label-help"}),
    )
    filename = forms.CharField(required=False, label="File name", widget=forms.TextInput(attrs={"type": "search"}))
    status = forms.ChoiceField(required=False, label="Status", choices=[("", "Any status"), *PredictionStatus.choices])
    sure = forms.ChoiceField(
        required=False,
        label="Model was",
        choices=[("", "Sure or not"), ("sure", "Sure"), ("unsure", "Not sure")],
    )
    model_version = forms.ChoiceField(required=False, label="Model version", choices=[("", "Any version")])
    created_after = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    created_before = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, versions: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["model_version"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "Any version"), *((v, f"v{v}") for v in versions or [])]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("created_after"), cleaned.get("created_before")
        if start and end and start > end:
            raise forms.ValidationError(
                f"The date range is reversed: “From” ({start:%Y-%m-%d}) is after “To” ({end:%Y-%m-%d}).",
                code="reversed_range",
            )
        return cleaned


class CorrectionForm(forms.Form):
    # Emptiness and length are checked by services.correction_set, with the API's messages.
    label = forms.CharField(required=False, label="The right class")
    new_class = forms.BooleanField(required=False, label="It is none of the model's classes: a new class")
