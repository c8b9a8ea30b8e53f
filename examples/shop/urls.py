from django.urls import path

from shop import views

urlpatterns = [
    path("", views.home),
    path("orders/<int:order_id>/", views.order),
    path("checkout/<int:order_id>/", views.checkout),
    path("broken/", views.broken),
]
