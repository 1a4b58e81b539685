"""`avatar serve CKPT`: the live server (avatar.runtime.server) on 127.0.0.1 with its web page."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from avatar.commands import fail
from avatar.runtime.server import AvatarServer, ServerConfig, SourceFactory


@dataclass
class Serve:
    """Live avatar server: streamed audio over a WebSocket in, JPEG frames out, plus a web page."""

    ckpt: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CKPT")]
    """Avatar checkpoint (.pt), or "procedural" for the built-in procedural head (no training)."""
    host: str = "127.0.0.1"
    """Interface to bind (127.0.0.1 = this machine only; 0.0.0.0 exposes it to the network)."""
    port: int = 8765
    """TCP port for the page (http://HOST:PORT/) and the stream (ws://HOST:PORT/ws); 0 = any free port."""
    width: int = 256
    """Frame width per eye in pixels."""
    height: int = 256
    """Frame height in pixels."""
    jpeg_quality: int = 85
    """JPEG quality of streamed frames (1-100)."""
    max_chunk_s: float = 1.0
    """Longest audio chunk accepted in one message, in seconds at the declared rate and format."""
    max_clients: int = 8
    """Simultaneous streams; more are refused with a 'server_busy' error."""
    workers: int = 1
    """Render threads shared by all clients."""
    files: Optional[Path] = None
    """Folder whose audio files the page may play by name (GET /files/NAME); none by default."""
    backend: str = "auto"
    """Rasterizer backend."""
    fps: Optional[float] = None
    """Output frame rate (default: the checkpoint's training fps; 25 for the procedural head)."""
    data: Optional[Path] = None
    """Capture folder the avatar was trained on (fps and camera when the checkpoint lacks them)."""
    threads: Optional[int] = None
    """torch intra-op threads for rendering (default: torch's choice; 1 helps on a busy CPU)."""

    def main(self) -> int:
        import logging

        if self.threads is not None:
            import torch

            torch.set_num_threads(int(self.threads))
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: serving on {self.host}: anyone who can reach this machine can use it")
        try:
            factory = make_factory(self.ckpt, self.width, self.height, self.backend, self.fps, self.data)
        except ValueError as e:  # CheckpointError, DatasetError, ...
            return fail("serve", e)
        server = AvatarServer(factory,
                              ServerConfig(jpeg_quality=self.jpeg_quality, max_chunk_s=self.max_chunk_s,
                                           max_clients=self.max_clients, workers=self.workers,
                                           files=self.files))

        async def run():
            await server.start(self.host, self.port)
            print(f"avatar serve: open http://{self.host}:{server.port}/  (stream: ws://{self.host}:{server.port}/ws)",
                  flush=True)
            await server.wait_closed()

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            pass
        except OSError as e:  # port in use, no such interface
            return fail("serve", f"cannot listen on {self.host}:{self.port}: {e}")
        return 0


def make_factory(ckpt: str, width: int, height: int, backend: str = "auto",
                 fps: Optional[float] = None, data: Optional[Path] = None) -> SourceFactory:
    """stereo -> a fresh FrameSource; the model (if any) is loaded once and shared."""
    from avatar.runtime.view import ViewConfig

    if ckpt == "procedural":
        from avatar.runtime.sources import ProceduralHeadSource

        def factory(stereo: bool):
            return ProceduralHeadSource(ViewConfig(width, height, stereo, backend=backend), fps=fps or 25.0)
        return factory
    from avatar.runtime.sources import AvatarSource, apply_capture_defaults, load_avatar

    model = load_avatar(Path(ckpt))
    if data is not None:
        from avatar.data import load_capture

        apply_capture_defaults(model, load_capture(data))

    def factory(stereo: bool):
        return AvatarSource(model, ViewConfig(width, height, stereo, backend=backend), fps=fps, streaming=True)
    return factory
