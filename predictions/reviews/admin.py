"""Admin of reviews: read by operators, exported as a labelled dataset."""

from __future__ import annotations

import tempfile

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from predictions import access
from predictions.exceptions import ApplicationError
from predictions.models import Correction
from predictions.reviews import export as review_export


@admin.register(Correction)
class CorrectionAdmin(admin.ModelAdmin[Correction]):
    """Users' reviews (corrections and confirmations), read-only; whoever reads every
    prediction (``access.can_view_all_predictions``) sees them and exports them as a
    dataset (filter on "confirmed" to export corrections only)."""

    list_display = [
        "thumbnail", "predicted_label", "label", "confirmed", "class_id", "new_class", "model_version", "corrected_by",
        "updated_at",
    ]  # fmt: skip
    # "New class": labels the owner said the model does not have, to look at before training on them.
    list_filter = ["confirmed", "new_class", "model_version", "updated_at"]
    search_fields = ["label", "predicted_label", "class_id", "corrected_by__username"]
    list_select_related = ["prediction", "model_version", "corrected_by"]
    date_hierarchy = "updated_at"
    actions = ["export_dataset"]

    @admin.display(description="Image")
    def thumbnail(self, correction: Correction) -> str:
        url = reverse("admin-prediction-image", args=[correction.prediction_id])
        return format_html('<img src="{}?size=thumb" class="log-thumb" alt="{}">', url, correction.label)

    def has_view_permission(self, request: HttpRequest, obj: Correction | None = None) -> bool:
        return access.can_view_all_predictions(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access.can_view_all_predictions(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Correction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Correction | None = None) -> bool:
        return False

    def has_export_permission(self, request: HttpRequest) -> bool:
        return access.can_view_all_predictions(request.user)

    @admin.action(description="Export the selected as a dataset (zip: a folder per label, manifest.csv)",
                  permissions=["export"])  # fmt: skip
    def export_dataset(self, request: HttpRequest, queryset: QuerySet[Correction]) -> FileResponse | None:
        # Spooled: a few hundred images stay in memory, a large export goes to a temp file.
        # FileResponse closes it once sent, so no context manager here.
        archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
        corrections = queryset.select_related("prediction", "model_version").order_by("label", "created_at")
        try:
            review_export.correction_export_zip(corrections=corrections, target=archive)
        except ApplicationError as error:
            archive.close()
            self.message_user(request, error.message, messages.ERROR)
            return None
        archive.seek(0)
        name = f"corrections-{timezone.now():%Y%m%d-%H%M%S}.zip"
        return FileResponse(archive, as_attachment=True, filename=name, content_type="application/zip")
