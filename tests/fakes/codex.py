"""A fake `codex` executable, written by the tests, behaving like the real one as the prompt asks.

Header with the session id on stderr (colour-wrapped for 'ansi'), the instruction echoed on stderr and stdout
as Codex's transcript does, then by words in the instruction: layout-159 (default), layout-141-end,
layout-141-call, layout-generated, layout-workdir; refuse, exit-3, no-output, quota (or a file 'exhausted' in
CODEX_HOME), quota-rollout (the limit only as a rollout error event), slow (spawns a child and sleeps),
slow-once (slow the first time on an account), hold (0.3 s), meet (an account's first run waits, up to 15 s,
until another account's first run has begun: proof they ran at once), same-image (one fixed image, unless
CODEX_HOME holds 'fresh'); "Reply with" (the keep-alive) just answers OK. Every image is otherwise different.
A vision run (--output-last-message) answers in that file, or answer-in-rollout, answer-in-stdout, no-answer.
With auth.json and a file 'rotate' in CODEX_HOME, each run rotates the refresh token as Codex does.
It records its argv and environment in the workdir, appends start/end lines to CODEX_HOME/execs.log, and marks
CONFLICT in CODEX_HOME if two runs overlap on one account.
"""

from __future__ import annotations

import itertools
import stat
import sys
from pathlib import Path

SCRIPT = r"""
import base64, io, json, os, pathlib, random, signal, subprocess, sys, time, uuid
from PIL import Image

args = sys.argv[1:]
instruction = args[args.index("--") + 1]
workdir = pathlib.Path(args[args.index("-C") + 1])
home = pathlib.Path(os.environ["CODEX_HOME"])
home.mkdir(parents=True, exist_ok=True)
(workdir / "argv.json").write_text(json.dumps(args))
(workdir / "env.json").write_text(json.dumps(dict(os.environ)))


def note(what):
    with open(home / "execs.log", "a") as handle:
        handle.write(f"{what} {time.time_ns()} {os.getpid()}\n")


def stop(_signum, _frame):
    sys.exit(143)


signal.signal(signal.SIGTERM, stop)
note("start")
try:
    marker = os.open(home / "running", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    (home / "CONFLICT").write_text("two execs on one account at once")
    marker = None
session = str(uuid.uuid4())
label = "\x1b[2m\x1b[1msession id:\x1b[0m" if "ansi" in instruction else "session id:"
sys.stderr.write(f"OpenAI Codex v0.160.0 (research preview)\n--------\nworkdir: {workdir}\nmodel: gpt-5\n"
                 f"{label} {session}\n--------\nuser\n{instruction}\n")
sys.stderr.flush()
print(f"user: {instruction}", flush=True)
auth = home / "auth.json"
if auth.exists() and (home / "rotate").exists():
    login = json.loads(auth.read_text())
    login["tokens"]["refresh_token"] = "rt-" + uuid.uuid4().hex
    login["last_refresh"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    auth.write_text(json.dumps(login))


def png():
    same = "same-image" in instruction and not (home / "fresh").exists()
    colour = (30, 120, 200) if same else tuple(random.randrange(256) for _ in range(3))
    image = Image.new("RGB", (1024, 1536), colour)
    if not same:
        image.putpixel((0, 0), (random.randrange(256), random.randrange(256), random.randrange(256)))
        image.putpixel((1, 0), (random.randrange(256), random.randrange(256), random.randrange(256)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rollout(events):
    now = time.gmtime()
    folder = home / "sessions" / time.strftime("%Y/%m/%d", now)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rollout-{time.strftime('%Y-%m-%dT%H-%M-%S', now)}-{session}.jsonl"
    lines = [{"type": "session_meta", "payload": {"id": session, "cli_version": "0.160.0"}}] + events
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


try:
    if "Reply with" in instruction:
        print("OK")
        sys.exit(0)
    if "quota-rollout" in instruction:
        rollout([{"type": "event_msg", "payload": {"type": "error",
                                                   "message": "You've hit your usage limit. resets_in_seconds: 600"}}])
        sys.exit(1)
    if "quota" in instruction or (home / "exhausted").exists():
        sys.stderr.write("ERROR: You've hit your usage limit (usage_limit_reached). Try again in 2 hours 5 minutes.\n")
        sys.exit(1)
    once = home / "slow-once-done"
    if "slow" in instruction and not ("slow-once" in instruction and once.exists()):
        once.touch()
        child = subprocess.Popen(["sleep", "1000"])
        (workdir / "pids.txt").write_text(f"{os.getpid()} {child.pid}")
        time.sleep(1000)
    if "hold" in instruction:
        time.sleep(0.3)
    if "meet" in instruction:  # an account's first run waits until another account's first run has begun
        meeting = home.parent / "meeting"
        meeting.mkdir(exist_ok=True)
        first = not (meeting / home.name).exists()
        (meeting / home.name).touch()
        deadline = time.monotonic() + 15
        while first and not any(other.name != home.name for other in meeting.iterdir()):
            if time.monotonic() > deadline:
                sys.stderr.write("no other account ran beside this one\n")
                sys.exit(4)
            time.sleep(0.02)
    if "--output-last-message" in args:  # a vision run: answer about the --image files
        images = [args[i + 1] for i, arg in enumerate(args) if arg == "--image"]
        answer = f"VERDICT: PASS ({len(images)} image(s) seen)"
        if "answer-in-rollout" in instruction:
            rollout([{"type": "event_msg", "payload": {"type": "agent_message", "message": answer}}])
        elif "answer-in-stdout" in instruction:
            print(answer)
        elif "no-answer" not in instruction:
            pathlib.Path(args[args.index("--output-last-message") + 1]).write_text(answer + "\n")
        sys.exit(0)
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
    note("end")
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


def exec_intervals(home: Path) -> list[tuple[int, int | None]]:
    """Each exec on the account as (start, end) in ns from its execs.log; end None if it never ended."""
    starts: dict[str, int] = {}
    intervals: list[tuple[int, int | None]] = []
    log = home / "execs.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        what, at, pid = line.split()
        if what == "start":
            starts[pid] = int(at)
        elif pid in starts:
            intervals.append((starts.pop(pid), int(at)))
    intervals += [(start, None) for start in starts.values()]
    return sorted(intervals)


def overlaps(home: Path) -> int:
    """How many execs on the account began before the previous one ended."""
    intervals = exec_intervals(home)
    count = 0
    for (_start, end), (next_start, _next_end) in itertools.pairwise(intervals):
        if end is None or next_start < end:
            count += 1
    return count
