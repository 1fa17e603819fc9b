"""What the broker benches share: their log line and a throwaway local Kafka broker in a temporary directory."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path


def log(msg: str) -> None:
    """A progress line on stderr (stdout keeps the figures and the final JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ScratchBroker:
    """A local Kafka broker (deploy.local.kafka.LocalKafka) under a new temporary directory ``tmp``:
    ``start()`` returns its bootstrap address; ``close()`` — in the bench's ``finally`` — stops it and removes the
    directory, or with ``keep`` leaves it and says where."""

    def __init__(self, prefix: str, keep: bool = False) -> None:
        from deploy.local.kafka import LocalKafka

        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep = keep
        self.kafka = LocalKafka(self.tmp / "kafka")

    def start(self) -> str:
        return self.kafka.start()

    def close(self) -> None:
        self.kafka.stop()
        if self.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
