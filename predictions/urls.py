from django.urls import path

from predictions import gallery, views
from predictions.explanations import views as explanation_views

app_name = "predictions"

urlpatterns = [
    path("", views.upload, name="upload"),
    path("results/", views.batch, name="batch"),
    path("history/", gallery.history, name="history"),
    path("history/export.csv", gallery.history_csv, name="history-csv"),
    path("history/selected/", gallery.history_selected, name="history-selected"),
    path("predictions/<str:prediction_id>/", views.detail, name="detail"),
    path("predictions/<str:prediction_id>/card/", views.card, name="card"),
    path("predictions/<str:prediction_id>/image/", views.image, name="image"),
    path("predictions/<str:prediction_id>/delete/", views.delete, name="delete"),
    path("predictions/<str:prediction_id>/retry/", views.retry, name="retry"),
    path("predictions/<str:prediction_id>/correction/", views.correct, name="correct"),
    path("predictions/<str:prediction_id>/confirmation/", views.confirm, name="confirm"),
    path("predictions/<str:prediction_id>/review/withdraw/", views.withdraw_review, name="review-withdraw"),
    path("predictions/<str:prediction_id>/explain/", explanation_views.explain, name="explain"),
    path(
        "predictions/<str:prediction_id>/explanation.png",
        explanation_views.explanation_image,
        name="explanation-image",
    ),
]
