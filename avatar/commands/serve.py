"""`avatar serve CKPT`: the live server (avatar.runtime.server) on 127.0.0.1 with its web page."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Tuple

import tyro

from avatar.commands import fail
from avatar.runtime.server import AvatarServer, ServerConfig, SourceFactory, check_origin


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
    """Folder whose audio and video files the page lists and plays (GET /files/ is the index, GET
    /files/NAME a file; no dotfiles, no other kinds of file); none by default."""
    allow_origin: Tuple[str, ...] = ()
    """Extra origins (http[s]://HOST[:PORT]) whose pages may use the server, e.g. http://mybox.lan:8765
    when serving on 0.0.0.0. Only the page's own origin on 127.0.0.1/localhost is accepted otherwise."""
    token: bool = False
    """Require a random per-run token, printed in the page's URL (?token=...), for /ws and /files."""
    idle_timeout: float = 30.0
    """Seconds a connection may send nothing (or read none of its frames) before it is closed; a
    connection must also send a valid 'start' within --start-timeout seconds of connecting."""
    start_timeout: float = 5.0
    """Seconds a new connection has to send its 'start' message."""
    max_ahead: float = 2.0
    """Seconds of audio a client may send ahead of real time; beyond that the server reads it only as
    fast as real time (so one client cannot starve the others)."""
    backend: str = "auto"
    """Rasterizer backend."""
    fps: Optional[float] = None
    """Output frame rate (default: the checkpoint's training fps; 25 for the procedural head)."""
    data: Optional[Path] = None
    """Capture folder the avatar was trained on (fps and camera when the checkpoint lacks them)."""
    prior: Optional[Path] = None
    """Motion prior (as `avatar drive --prior`): default the recorded one, else the shipped one (for
    avatars that take motion codes); "none" turns it off. Per client it runs over a sliding causal
    window of the audio received (no latency beyond the stream's own look-ahead)."""
    pose: Literal["fixed", "prior"] = "fixed"
    """Head pose: the reference camera, or "prior": head motion predicted from the speech."""
    pose_scale: float = 1.0
    """With --pose prior: blend with the neutral pose (0 neutral, 1 predicted; as `avatar drive`)."""
    style: Optional[Path] = None
    """Speaking-style reference for the prior: a capture folder of the person."""
    threads: Optional[int] = None
    """torch intra-op threads for rendering (default: torch's choice; 1 helps on a busy CPU)."""

    def main(self) -> int:
        import logging

        if not 0 <= self.port <= 65535:
            return fail("serve", f"--port must be in 0..65535, got {self.port}")
        for name, value, lo, hi in (("--width", self.width, 8, 4096), ("--height", self.height, 8, 4096),
                                    ("--jpeg-quality", self.jpeg_quality, 1, 100),
                                    ("--max-clients", self.max_clients, 1, 1024), ("--workers", self.workers, 1, 256)):
            if not lo <= value <= hi:
                return fail("serve", f"{name} must be in {lo}..{hi}, got {value}")
        for name, value in (("--idle-timeout", self.idle_timeout), ("--start-timeout", self.start_timeout),
                            ("--max-ahead", self.max_ahead), ("--max-chunk-s", self.max_chunk_s)):
            if not 0 < value < float("inf"):
                return fail("serve", f"{name} must be a positive number of seconds, got {value}")
        if self.files is not None and not self.files.is_dir():
            return fail("serve", f"--files {self.files}: not a folder")
        try:
            origins = tuple(check_origin(o) for o in self.allow_origin)
        except ValueError as e:
            return fail("serve", f"--allow-origin: {e}")
        if self.threads is not None:
            import torch

            torch.set_num_threads(int(self.threads))
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("websockets").setLevel(logging.WARNING)  # no line per refused request
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: serving on {self.host}: anyone who can reach this machine can use it"
                  + ("" if self.token else " (consider --token)"))
            if not origins:
                print("note: pages are accepted only from 127.0.0.1/localhost; to open the page from another "
                      f"machine add --allow-origin http://THIS-MACHINE:{self.port}")
        try:
            factory = make_factory(self.ckpt, self.width, self.height, self.backend, self.fps, self.data,
                                   prior=self.prior, pose=self.pose, pose_scale=self.pose_scale, style=self.style)
        except ValueError as e:  # CheckpointError, DatasetError, ...
            return fail("serve", e)
        import secrets

        server = AvatarServer(factory,
                              ServerConfig(jpeg_quality=self.jpeg_quality, max_chunk_s=self.max_chunk_s,
                                           max_clients=self.max_clients, workers=self.workers,
                                           files=self.files, allow_origins=origins,
                                           token=secrets.token_urlsafe(16) if self.token else None,
                                           idle_timeout_s=self.idle_timeout, start_timeout_s=self.start_timeout,
                                           max_ahead_s=self.max_ahead))

        async def run():
            await server.start(self.host, self.port)
            print(f"avatar serve: open {server.url(self.host)}  (stream: {server.url(self.host, 'ws')})", flush=True)
            await server.wait_closed()

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            pass
        except (OSError, OverflowError) as e:  # port in use, no such interface
            return fail("serve", f"cannot listen on {self.host}:{self.port}: {e}")
        return 0


def make_factory(ckpt: str, width: int, height: int, backend: str = "auto",
                 fps: Optional[float] = None, data: Optional[Path] = None, prior=None, pose: str = "fixed",
                 pose_scale: float = 1.0, style: Optional[Path] = None) -> SourceFactory:
    """stereo -> a fresh FrameSource; the model (if any) is loaded once and shared. With a motion prior
    (recorded, shipped or `prior`; "none" = off) every client gets its own LivePriorTracks."""
    from avatar.runtime.view import ViewConfig

    if ckpt == "procedural":
        from avatar.runtime.sources import ProceduralHeadSource

        def factory(stereo: bool):
            return ProceduralHeadSource(ViewConfig(width, height, stereo, backend=backend), fps=fps or 25.0)
        return factory
    from avatar.runtime.sources import AvatarSource, apply_capture_defaults, load_avatar

    import sys

    from avatar.model.device import resolve_device

    dev, why = resolve_device("auto")
    print(f"[serve] device: {dev} ({why})", file=sys.stderr, flush=True)
    model = load_avatar(Path(ckpt), dev)
    if data is not None:
        from avatar.data import load_capture

        apply_capture_defaults(model, load_capture(data))

    from avatar.audio.timeline import DriveError
    from avatar.runtime.sources import live_prior_source, recorded_prior

    prior_path = recorded_prior(model, prior)
    if prior_path is None and (pose == "prior" or style is not None):
        raise DriveError("--pose prior/--style need a motion prior: pass --prior PRIOR.pt")
    style_ref = None
    if style is not None:
        from avatar.prior.api import style_from_capture

        style_ref = style_from_capture(style, prior_path=prior_path)

    def factory(stereo: bool):
        view = ViewConfig(width, height, stereo, backend=backend)
        if prior_path is not None:
            return live_prior_source(model, prior_path, view, fps=fps, pose=pose, pose_scale=pose_scale, style=style_ref)
        return AvatarSource(model, view, fps=fps, streaming=True)
    return factory
