"""Account pages. Login, logout and sign-up keep Django's un-namespaced names
(``login``, ``logout``, ``signup``: ``LOGIN_URL`` and the templates use them); the
profile is ``accounts:profile``."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("profile/", views.profile, name="profile"),
]

auth_urlpatterns = [
    # Plain Django login: django-axes refuses locked-out attempts inside authenticate().
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    # Django's views (old password, new twice, the validators), the old password checked
    # through authenticate() so django-axes counts wrong ones; the session stays signed in,
    # the API token is replaced (accounts.passwords). Templates: registration/password_change_*.html.
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
]
