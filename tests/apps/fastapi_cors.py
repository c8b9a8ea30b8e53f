"""FastAPI's CORS tutorial, `configure()` first, as under the launcher."""

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import tracestream

tracestream.configure()

app = FastAPI()

origins = [
    "http://localhost.tiangolo.com",
    "https://localhost.tiangolo.com",
    "http://localhost",
    "http://localhost:8080",
]

app.add_middleware(
    CORSMiddleware,
    allow_origins=origins,
    allow_credentials=True,
    allow_methods=["*"],
    allow_headers=["*"],
)


@app.get("/")
async def main() -> dict[str, str]:
    return {"message": "Hello World"}
