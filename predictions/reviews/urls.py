from django.urls import path

from predictions.reviews import views

app_name = "reviews"

urlpatterns = [
    path("", views.reviews_page, name="list"),
    path("export.zip", views.reviews_export, name="export"),
    path("<str:prediction_id>/thumb/", views.review_image, name="image"),
]
