from django.contrib import admin
from django.urls import include, path

from proj.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/", include("orders.urls")),
    path("api/", api.urls),
    path("", include("articles.urls")),
]
