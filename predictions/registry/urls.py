from django.urls import path

from predictions.learning import views as learning_views
from predictions.registry import views

app_name = "models"

urlpatterns = [
    path("", views.models_page, name="list"),
    path("rollback/", views.rollback, name="rollback"),
    path("learning/pause/", learning_views.learning_pause, name="learning_pause"),
    path("<int:pk>/activate/", views.activate, name="activate"),
    path("<int:pk>/traffic/", views.traffic, name="traffic"),
]
