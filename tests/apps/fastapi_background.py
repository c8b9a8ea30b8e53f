"""FastAPI's Background Tasks tutorial, with a mail server as real ones are: slow
(MAIL_SERVER_DELAY seconds) and refusing some addresses. The notification log goes to
NOTIFICATION_LOG rather than the working directory; `configure()` runs when
FASTAPI_DOCS_TRACESTREAM is set, so the app runs the same with and without tracestream.
"""

import os
import time

from fastapi import BackgroundTasks, FastAPI

app = FastAPI()


def write_notification(email: str, message: str = "") -> None:
    time.sleep(float(os.environ.get("MAIL_SERVER_DELAY", "0")))
    if email.startswith("bounce@"):
        raise ValueError(f"mailbox unavailable: {email}")
    with open(os.environ["NOTIFICATION_LOG"], mode="w") as email_file:
        content = f"notification for {email}: {message}"
        email_file.write(content)


@app.post("/send-notification/{email}")
async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(write_notification, email, message="some notification")
    return {"message": "Notification sent in the background"}


if os.environ.get("FASTAPI_DOCS_TRACESTREAM") == "1":
    import tracestream

    tracestream.configure()
