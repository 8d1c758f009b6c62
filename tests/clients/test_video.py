"""Video frame sampling (GIF with Pillow, MP4 with PyAV)."""

from __future__ import annotations

import pytest
from PIL import Image

from qvl_client import ImageInputError
from qvl_client.video import sample_frames


def make_gif(path, n=20, ms=250):  # 5 s at 4 frames/s, each frame a different grey
    frames = [Image.new("RGB", (64, 48), (i * 10, i * 10, i * 10)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)


def test_gif_at_1fps(tmp_path):
    make_gif(tmp_path / "a.gif")
    frames = sample_frames(tmp_path / "a.gif", fps=1.0, max_frames=32)
    assert len(frames) == 5  # t = 0, 1, 2, 3, 4 s
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 40, 80, 120, 160]


def test_frame_cap_spreads_over_the_clip(tmp_path):
    make_gif(tmp_path / "a.gif")
    frames = sample_frames(tmp_path / "a.gif", fps=4.0, max_frames=4)
    assert len(frames) == 4
    greys = [f.getpixel((0, 0))[0] for f in frames]
    assert greys[0] == 0 and greys[-1] >= 140  # reaches the end, not the first second only


def test_mp4_with_pyav(tmp_path):
    import av  # in the dev group: `make install` has it
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as box:
        stream = box.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):  # 3 s
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (i * 8, 0, 0)))
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    frames = sample_frames(path, fps=1.0)
    assert len(frames) == 3 and frames[0].size == (64, 48)


def test_bad_video(tmp_path):
    with pytest.raises(ImageInputError, match="no such file"):
        sample_frames(tmp_path / "none.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ImageInputError):
        sample_frames(bad)
