"""Flask's quickstart app, as written there: tracestream writes no request record for it."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello_world():  # type: ignore[no-untyped-def]
    return "<p>Hello, World!</p>"
