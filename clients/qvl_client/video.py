"""Video inputs: sample frames at a rate with a cap, send them as images or as one video part.

GIF and animated WebP decode with Pillow alone; other containers (MP4, WebM, MOV, ...) need
PyAV: `pip install qvl-client[video]`.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path

from PIL import Image

from qvl_client.images import ImageInputError

PIL_ANIMATED = {".gif", ".webp", ".apng", ".png"}


def sample_frames(path: str | os.PathLike, fps: float = 1.0,
                  max_frames: int = 32) -> list[Image.Image]:
    """Frames at `fps` (time-based, so variable frame rates are handled), at most
    `max_frames`; when the clip is longer, frames are spread evenly over all of it."""
    p = Path(path)
    if not p.is_file():
        raise ImageInputError(f"{path}: no such file")
    if fps <= 0 or max_frames < 1:
        raise ValueError("fps must be > 0 and max_frames >= 1")
    timed = _decode_pil(p) if p.suffix.lower() in PIL_ANIMATED else _decode_av(p)
    if not timed:
        raise ImageInputError(f"{path}: no frames could be decoded")
    duration = timed[-1][0] + 1e-9
    n = min(max_frames, max(1, int(duration * fps) + 1))
    step = duration / n if int(duration * fps) + 1 > max_frames else 1.0 / fps
    wanted = [i * step for i in range(n)]
    out, j = [], 0
    for t in wanted:  # the last frame shown at or before t
        while j + 1 < len(timed) and timed[j + 1][0] <= t:
            j += 1
        out.append(timed[j][1])
    return out


def _decode_pil(p: Path) -> list[tuple[float, Image.Image]]:
    try:
        img = Image.open(p)
    except Exception as e:  # noqa: BLE001 - reported as a bad input
        raise ImageInputError(f"{p}: cannot be read as an animation ({e})") from None
    frames, t = [], 0.0
    for i in range(getattr(img, "n_frames", 1)):
        img.seek(i)
        frames.append((t, img.convert("RGB")))
        t += (img.info.get("duration") or 100) / 1000.0
    return frames


def _decode_av(p: Path) -> list[tuple[float, Image.Image]]:
    try:
        import av
    except ImportError:
        raise ImageInputError(f"{p}: decoding {p.suffix or 'this'} video needs PyAV: "
                              "pip install 'qvl-client[video]'") from None
    try:
        with av.open(str(p)) as box:
            stream = box.streams.video[0]
            frames = []
            for frame in box.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else len(frames)
                frames.append((t, frame.to_image()))
    except (av.error.FFmpegError, IndexError) as e:
        raise ImageInputError(f"{p}: not a readable video ({e})") from None
    t0 = frames[0][0] if frames else 0.0
    return [(t - t0, f) for t, f in frames]


def video_part(path: str | os.PathLike) -> dict:
    """The whole file as one `video_url` content part (the server samples it; needs a server
    started with videos allowed, e.g. `qvl serve --max-videos 1`)."""
    p = Path(path)
    if not p.is_file():
        raise ImageInputError(f"{path}: no such file")
    mime = mimetypes.guess_type(p.name)[0] or "video/mp4"
    url = f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode()
    return {"type": "video_url", "video_url": {"url": url}}
