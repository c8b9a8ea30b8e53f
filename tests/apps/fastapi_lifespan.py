"""FastAPI's Lifespan Events tutorial, with `configure()` called in the lifespan, as that page
suggests for what the whole app uses, when FASTAPI_DOCS_TRACESTREAM is set: the app runs the same
with and without tracestream. Beside the tutorial: a line logged once the model is loaded, and an
endpoint for a model the lifespan never loads, which fails.
"""

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

logger = logging.getLogger(__name__)


def fake_answer_to_everything_ml_model(x: float) -> float:
    return x * 42


ml_models: dict[str, Callable[[float], float]] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if os.environ.get("FASTAPI_DOCS_TRACESTREAM") == "1":
        import tracestream

        tracestream.configure()
    # Load the ML model
    ml_models["answer_to_everything"] = fake_answer_to_everything_ml_model
    logger.warning("answer_to_everything loaded")
    yield
    # Clean up the ML models and release the resources
    ml_models.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/predict")
async def predict(x: float) -> dict[str, float]:
    result = ml_models["answer_to_everything"](x)
    return {"result": result}


@app.get("/forecast")
async def forecast(x: float) -> dict[str, float]:
    result = ml_models["forecast"](x)
    return {"result": result}
