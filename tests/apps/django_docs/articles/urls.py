"""The Django docs' URLconf written with regular expressions (URL dispatcher, "Using regular
expressions"), as DRF's routers write theirs."""

from django.urls import re_path

from . import views

urlpatterns = [
    re_path(r"^articles/(?P<year>[0-9]{4})/$", views.year_archive),
]
