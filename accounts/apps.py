from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Sign-up, login (throttled by django-axes), logout, the profile page with the API
    token, and the admin account command."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
