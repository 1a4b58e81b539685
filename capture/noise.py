"""Known third-party noise of the capture backends, silenced at the source where it can be and filtered
where it cannot, without hiding real errors.

* protobuf >= 4 removed `MessageFactory.GetPrototype`, which mediapipe's bindings still call while they
  import, printing `AttributeError: 'MessageFactory' object has no attribute 'GetPrototype'`:
  `import_mediapipe()` restores it (as protobuf's own `GetMessageClass`) before importing mediapipe.
* TensorFlow Lite and absl (C++) log to file descriptor 2 from mediapipe's graph threads ("INFO: Created
  TensorFlow Lite XNNPACK delegate", "W0000 ... inference_feedback_manager.cc ...", the absl
  InitializeLog banner); no environment variable turns them off. `native_noise_filtered()` routes fd 2
  through a pipe while a stage runs and drops only those known info/warning lines: absl errors
  (E/F severity), Python warnings and tracebacks pass through unchanged, as they come.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

NOISE = re.compile(
    r"^(INFO: Created TensorFlow Lite .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ [\w./-]+\.(cc|h):\d+\] .*"
    r"|AttributeError: 'MessageFactory' object has no attribute 'GetPrototype')\s*$")


def import_mediapipe():
    """`import mediapipe` without protobuf's GetPrototype complaint (see the module docstring)."""
    try:
        from google.protobuf import message_factory as mf

        if not hasattr(mf.MessageFactory, "GetPrototype") and hasattr(mf, "GetMessageClass"):
            mf.MessageFactory.GetPrototype = lambda self, descriptor: mf.GetMessageClass(descriptor)
    except ImportError:
        pass
    import mediapipe

    return mediapipe


@contextmanager
def native_noise_filtered() -> Iterator[None]:
    """While inside: everything written to fd 2 passes through, line by line, except NOISE lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    r, w = os.pipe()

    def pump() -> None:
        buf = b""
        with os.fdopen(r, "rb", buffering=0) as src:
            while True:
                chunk = src.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                out = b"".join(ln + b"\n" for ln in lines if not NOISE.match(ln.decode("utf-8", "replace")))
                if out:
                    os.write(saved, out)
        if buf and not NOISE.match(buf.decode("utf-8", "replace")):
            os.write(saved, buf)

    t = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    t.start()
    os.dup2(w, 2)
    os.close(w)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF and finishes
        t.join(timeout=5.0)
        os.close(saved)
