"""Sentry's FastAPI integration page: `sentry_sdk.init()` before the app, then FastAPI's "First
Steps" app. The DSN (SENTRY_DSN) names a port nobody listens on: each transaction Sentry would
send is printed by its documented `before_send_transaction` hook, then dropped."""

import os

import sentry_sdk
from fastapi import FastAPI


def before_send_transaction(event, hint):  # type: ignore[no-untyped-def]
    print("sentry transaction:", event["transaction"], flush=True)
    return None


sentry_sdk.init(
    dsn=os.environ["SENTRY_DSN"],
    send_default_pii=True,
    traces_sample_rate=1.0,
    before_send_transaction=before_send_transaction,
)

app = FastAPI()


@app.get("/")
async def root():  # type: ignore[no-untyped-def]
    return {"message": "Hello World"}
