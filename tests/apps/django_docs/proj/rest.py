"""Django REST framework, as its docs write it: a function-based view (`@api_view`, the
tutorial's "Requests and responses") raising the custom exception of its "Exceptions" page,
which DRF answers with the exception's status and logs nowhere; and one raising any other
exception, which DRF leaves to Django (the same page: "will result in a 500")."""

from django.http import HttpRequest
from rest_framework.decorators import api_view
from rest_framework.exceptions import APIException
from rest_framework.response import Response


class ServiceUnavailable(APIException):
    status_code = 503
    default_detail = "Service temporarily unavailable, try again later."
    default_code = "service_unavailable"


@api_view(["GET"])
def inventory(request: HttpRequest, sku: str) -> Response:
    raise ServiceUnavailable()


@api_view(["GET"])
def stock(request: HttpRequest, sku: str) -> Response:
    raise LookupError(f"no stock count for {sku}")
