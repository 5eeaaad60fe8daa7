from django.apps import AppConfig

from predictions.operations import checks


class PredictionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "predictions"

    def ready(self) -> None:
        from django.conf import settings
        from django.core import checks as django_checks
        from PIL import Image

        # Pillow's decompression-bomb guard, the same in every process (web, worker, CLI).
        Image.MAX_IMAGE_PIXELS = settings.MAX_IMAGE_PIXELS
        django_checks.register(checks.reconcile_after_time_limit_check)
        django_checks.register(checks.security_middleware_check, django_checks.Tags.security, deploy=True)
