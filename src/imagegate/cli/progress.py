"""`imagegate generate --progress`: the job's status and time so far, on stderr."""

from __future__ import annotations

from typing import Any, TextIO

from imagegate.jobs.models import ACTIVE


class ProgressLine:
    """Rewritten in place on a terminal; elsewhere (a log, with --progress) one line each time the status changes."""

    def __init__(self, stream: TextIO, *, terminal: bool) -> None:
        self.stream = stream
        self.terminal = terminal
        self.last_status: str | None = None
        self.width = 0

    def __call__(self, job: dict[str, Any], seconds: float) -> None:
        """Show the job as it stands, seconds after it was submitted."""
        status = job["status"]
        text = f"{job['id']}: {status}, {seconds:.0f} s"
        if self.terminal:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = max(self.width, len(text))
            if status not in ACTIVE:
                self.stream.write("\n")
        elif status != self.last_status:
            self.stream.write(text + "\n")
        self.last_status = status
        self.stream.flush()
