from django.urls import path

from orders import views

urlpatterns = [
    path("<int:order_id>/", views.show, name="show"),
    path("<int:order_id>/ship/", views.ship, name="ship"),
    path("<int:order_id>/cancel/", views.cancel, name="cancel"),
    path("<int:order_id>/wait/", views.wait, name="wait"),
    path("<int:order_id>/prepare/", views.prepare, name="prepare"),
    path("<int:order_id>/traced-elsewhere/", views.traced_elsewhere, name="traced-elsewhere"),
    path("<int:order_id>/pay/", views.pay, name="pay"),
    path("<int:order_id>/export/", views.export, name="export"),
    path("<int:order_id>/export-async/", views.export_async, name="export-async"),
    path("<int:order_id>/track/", views.track, name="track"),
]
