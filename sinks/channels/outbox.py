"""The demo's default channel: nothing leaves the machine, every invitation lands in files.

A message is identified by its ``delivery_id``: the invitation id, or ``<invitation id>-reminder`` for the
invitation's reminder.

* e-mail: ``<home>/outbox/email/<delivery_id>.eml`` — the exact MIME message EmailChannel would send (same
  builder); a re-send overwrites it (written atomically via a temp file + rename). The writes of concurrent
  sends (the deliver stage sends a chunk at once) go to a worker thread together (``FileWriter``): one thread
  hop per group instead of one per file, each send still answered with its own file's outcome.
* SMS: one JSON object per line in ``<home>/outbox/sms.jsonl`` (invitation_id, delivery_id, reminder, to,
  from, body, segments, encoding, cost, currency, written_at). The file itself is the idempotency index:
  under an exclusive file lock the channel reads the lines added since it last looked and appends only
  when the delivery id is not there yet, so a re-send — from this process or another — never adds a
  second line.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sinks.channels.base import ChannelCosts, Invitation, SendResult, file_stem, money
from sinks.channels.email import InvalidMessage, MailTemplates
from sinks.channels.sms import sms_body, sms_encoding, sms_refusal, sms_segments

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: in-process lock only
    fcntl = None

MEDIA = ("email", "sms")
PASSING_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # the disk is full (or a size limit)


def outbox_dir(home: Path) -> Path:
    return Path(home) / "outbox"


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_files(files: list[tuple[Path, bytes]]) -> list[Exception | None]:
    """``write_atomically`` each (path, data), in order; each file's exception (or None), never raised."""
    outcomes: list[Exception | None] = []
    for path, data in files:
        try:
            write_atomically(path, data)
            outcomes.append(None)
        except Exception as exc:  # this file's outcome; the others are still written
            outcomes.append(exc)
    return outcomes


class FileWriter:
    """Writes files atomically in a worker thread, many per thread hop: the files asked for while a group is being
    written form the next group. ``await write(path, data)`` returns once that file is written, or raises what
    writing that very file raised (a full disk, a directory in the way) — other files of its group are unaffected."""

    def __init__(self) -> None:
        self.queue: list[tuple[Path, bytes, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def write(self, path: Path, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.queue = []  # a writer left by another event loop (tests) has nobody waiting any more
            self.task = loop.create_task(self.drain())
        future = loop.create_future()
        self.queue.append((path, data, future))
        await future

    async def drain(self) -> None:
        await asyncio.sleep(0)  # the sends started together (a gathered chunk) join the first group
        while self.queue:
            group, self.queue = self.queue, []
            try:
                outcomes = await asyncio.to_thread(write_files, [(path, data) for path, data, _ in group])
            except BaseException as exc:  # the loop is shutting down, or the thread itself failed: nobody hangs
                self.settle(group, [exc] * len(group))
                raise
            self.settle(group, outcomes)

    @staticmethod
    def settle(group: list[tuple[Path, bytes, asyncio.Future]], outcomes: list) -> None:
        for (_, _, future), error in zip(group, outcomes):
            if future.done():  # its send was cancelled
                continue
            if error is None:
                future.set_result(None)
            elif isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)


class AppendOnceLog:
    """Append-once JSON Lines file keyed by delivery_id (safe across threads and processes): the SMS outbox, the
    newsletter index."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._offset = 0  # bytes of the file already read into _seen

    def _catch_up(self, f) -> bool:
        """Read lines appended since the last look; True when the file is empty or ends with a newline."""
        size = f.seek(0, os.SEEK_END)
        if size < self._offset:  # truncated or replaced: start over
            self._seen.clear()
            self._offset = 0
        f.seek(self._offset)
        chunk = f.read(size - self._offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]
        for line in complete.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn line from a crash: ignored; the re-send writes a whole one
            if isinstance(rec, dict) and isinstance(rec.get("delivery_id", rec.get("invitation_id")), str):
                self._seen.add(rec.get("delivery_id", rec.get("invitation_id")))
        self._offset += len(complete)
        if size == 0:
            return True
        f.seek(size - 1)
        return f.read(1) == b"\n"

    def append_once(self, record: dict) -> bool:
        """Append `record` unless its delivery_id is already in the file; True when it was appended."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path, "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                ends_with_newline = self._catch_up(f)
                if record["delivery_id"] in self._seen:
                    return False
                line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
                if not ends_with_newline:
                    line = b"\n" + line  # never glue a record onto a torn line
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
                self._seen.add(record["delivery_id"])
                f.seek(0, os.SEEK_END)
                self._offset = f.tell()
                return True
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class OutboxChannel:
    """Writes e-mail (`medium="email"`) or SMS (`medium="sms"`) invitations to `<home>/outbox/`.

    The cost recorded is what the real channel would have cost, so the demo's dispatch report is realistic.
    """

    transport = "outbox"
    idempotent = True  # sending a delivery id again changes nothing (see the module docstring)

    def __init__(self, home: Path, medium: str = "email", *, costs: ChannelCosts | None = None,
                 sender_email: str | None = None, sender_name: str | None = None,
                 list_unsubscribe: str | None = None, sms_sender: str | None = None,
                 clock: Callable[[], datetime] | None = None):
        if medium not in MEDIA:
            raise ValueError(f"outbox medium must be one of {MEDIA}, not {medium!r}")
        self.name = medium
        self.home = Path(home)
        self.costs = costs or ChannelCosts()
        self.sender_email, self.sender_name = sender_email, sender_name
        self.list_unsubscribe, self.sms_sender = list_unsubscribe, sms_sender
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.sms_log = AppendOnceLog(outbox_dir(self.home) / "sms.jsonl")
        self.templates = MailTemplates(sender_email=sender_email, sender_name=sender_name,
                                       list_unsubscribe=list_unsubscribe)
        self.files = FileWriter()
        self.email_dir = outbox_dir(self.home) / "email"

    def email_path(self, invitation_id: str) -> Path:
        return self.email_dir / f"{file_stem(invitation_id)}.eml"

    async def send(self, invitation: Invitation) -> SendResult:
        try:
            if self.name == "email":
                return await self._send_email(invitation)
            return await self._send_sms(invitation)
        except OSError as e:  # disk full, permissions: a failure, never an exception in the agent
            # a full disk (or quota, or a file size limit) passes: tried again later (retry:outbox_write_failed);
            # a re-send is harmless (idempotent). Anything else (permissions, a missing mount) is a failure.
            return SendResult.failed("outbox_write_failed", attempts=1, detail=type(e).__name__,
                                     retryable=e.errno in PASSING_WRITE_ERRORS)

    async def _send_email(self, inv: Invitation) -> SendResult:
        if not inv.to_email:
            return SendResult.failed("no_address", attempts=0)
        try:
            msg = self.templates.build(inv, self.clock())
        except InvalidMessage as e:
            return SendResult.failed("invalid_invitation", attempts=0, detail=str(e))
        await self.files.write(self.email_path(inv.delivery_id), msg.data)
        return SendResult.sent(attempts=1, provider_id=msg.message_id, cost=money(self.costs.email),
                               currency=self.costs.currency)

    async def _send_sms(self, inv: Invitation) -> SendResult:
        sender, refused = sms_refusal(inv, self.sms_sender)
        if refused:
            return refused
        body = sms_body(inv)
        segments = sms_segments(body)
        cost = money(self.costs.sms * segments)
        record = {"invitation_id": inv.invitation_id, "delivery_id": inv.delivery_id, "reminder": inv.reminder,
                  "to": inv.to_phone.strip(), "from": sender, "body": body,
                  "segments": segments, "encoding": sms_encoding(body), "cost": cost,
                  "currency": self.costs.currency, "written_at": self.clock().isoformat()}
        await asyncio.to_thread(self.sms_log.append_once, record)
        return SendResult.sent(attempts=1, provider_id=f"outbox:{inv.delivery_id}", cost=cost,
                               currency=self.costs.currency)
