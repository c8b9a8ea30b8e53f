from django.http import HttpRequest, JsonResponse


def year_archive(request: HttpRequest, year: str) -> JsonResponse:
    """A regular expression passes its captured groups to the view as strings."""
    return JsonResponse({"year": year})
