from django.contrib import admin
from django.urls import include, path

from proj import rest
from proj.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/", include("orders.urls")),
    path("api/", api.urls),
    path("rest/inventory/<slug:sku>/", rest.inventory),
    path("rest/stock/<slug:sku>/", rest.stock),
    path("", include("articles.urls")),
]
