"""A fake `codex` executable, written by the tests, behaving like the real one as the prompt asks.

Header with the session id on stderr (colour-wrapped for 'ansi'), then by words in the instruction:
layout-159 (default), layout-141-end, layout-141-call, layout-generated, layout-workdir; refuse, exit-3,
no-output, quota (or a file 'exhausted' in CODEX_HOME), slow (spawns a child and sleeps), hold (0.3 s).
It records its argv in the workdir and marks CONFLICT in CODEX_HOME if two runs overlap on one account.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

SCRIPT = r"""
import base64, io, json, os, pathlib, subprocess, sys, time, uuid
from PIL import Image

args = sys.argv[1:]
instruction = args[args.index("--") + 1]
workdir = pathlib.Path(args[args.index("-C") + 1])
home = pathlib.Path(os.environ["CODEX_HOME"])
home.mkdir(parents=True, exist_ok=True)
(workdir / "argv.json").write_text(json.dumps(args))
try:
    marker = os.open(home / "running", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    (home / "CONFLICT").write_text("two execs on one account at once")
    marker = None
session = str(uuid.uuid4())
label = "\x1b[2m\x1b[1msession id:\x1b[0m" if "ansi" in instruction else "session id:"
sys.stderr.write(f"OpenAI Codex v0.160.0 (research preview)\n--------\nworkdir: {workdir}\nmodel: gpt-5\n"
                 f"{label} {session}\n--------\n")
sys.stderr.flush()


def png():
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1536), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def rollout(events):
    now = time.gmtime()
    folder = home / "sessions" / time.strftime("%Y/%m/%d", now)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rollout-{time.strftime('%Y-%m-%dT%H-%M-%S', now)}-{session}.jsonl"
    lines = [{"type": "session_meta", "payload": {"id": session, "cli_version": "0.160.0"}}] + events
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


try:
    if "quota" in instruction or (home / "exhausted").exists():
        sys.stderr.write("ERROR: You've hit your usage limit (usage_limit_reached). Try again in 2 hours 5 minutes.\n")
        sys.exit(1)
    if "slow" in instruction:
        child = subprocess.Popen(["sleep", "1000"])
        (workdir / "pids.txt").write_text(f"{os.getpid()} {child.pid}")
        time.sleep(1000)
    if "hold" in instruction:
        time.sleep(0.3)
    if "refuse" in instruction:
        print("I can't help create that image; it may violate the content policy.")
        sys.exit(0)
    if "exit-3" in instruction:
        sys.exit(3)
    if "no-output" in instruction:
        print("Done.")
        sys.exit(0)
    data = png()
    b64 = base64.b64encode(data).decode()
    if "layout-141-end" in instruction:
        rollout([{"type": "event_msg", "payload": {"type": "image_generation_end", "call_id": "ig_1", "result": b64}}])
    elif "layout-141-call" in instruction:
        rollout([{"type": "response_item", "payload": {"type": "image_generation_call", "status": "completed",
                                                       "result": b64}}])
    elif "layout-generated" in instruction:
        folder = home / "generated_images" / session
        folder.mkdir(parents=True)
        (folder / "ig_old.png").write_bytes(b"not the newest")
        os.utime(folder / "ig_old.png", (1, 1))
        (folder / "ig_new.png").write_bytes(data)
    elif "layout-workdir" in instruction:
        (workdir / "output.png").write_bytes(data)
    else:
        rollout([{"type": "event_msg", "payload": {"type": "item_completed",
                                                   "item": {"type": "image_generation", "id": "ig_1",
                                                            "result": b64}}}])
    print("Image created with $imagegen.")
finally:
    if marker is not None:
        os.close(marker)
        os.remove(home / "running")
"""


def write_fake_codex(folder: Path) -> Path:
    """Write the executable and return its path."""
    path = folder / "codex"
    path.write_text(f"#!{sys.executable}\n{SCRIPT}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
