from django.apps import AppConfig

from predictions.operations import checks


class PredictionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "predictions"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.core import checks as django_checks
        from django.db.models.signals import post_delete, post_save
        from PIL import Image
        from rest_framework.authtoken.models import Token

        from predictions.api import authentication
        from predictions.models import ModelVersion
        from predictions.registry import selectors as registry_selectors

        # Pillow's decompression-bomb guard, the same in every process (web, worker, CLI).
        Image.MAX_IMAGE_PIXELS = settings.MAX_IMAGE_PIXELS
        django_checks.register(checks.reconcile_after_time_limit_check)
        django_checks.register(checks.security_middleware_check, django_checks.Tags.security, deploy=True)
        # Submissions keep the versions they choose from in the process until one changes.
        for signal in (post_save, post_delete):
            signal.connect(
                registry_selectors.model_versions_changed, sender=ModelVersion, dispatch_uid="registry-changed"
            )
            # The API keeps what a token names while changes are heard (api.authentication).
            signal.connect(authentication.tokens_changed, sender=Token, dispatch_uid="tokens-changed-token")
            signal.connect(authentication.tokens_changed, sender=User, dispatch_uid="tokens-changed-user")
