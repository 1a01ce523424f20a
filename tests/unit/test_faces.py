"""``read_image``: what a path is, and images too large to decode (decompression bombs)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.errors import InputError
from streamproc.faces import read_image

DEFAULT_MAX_PIXELS = 100_000_000  # image.max_pixels


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_black_png(path: Path, width: int, height: int) -> Path:
    """A real, valid RGB PNG of black pixels, compressed row by row (never held whole in memory)."""
    packer, row, parts = zlib.compressobj(9), b"\0" * (1 + 3 * width), []
    parts = [packer.compress(row) for _ in range(height)]
    idat = b"".join(parts) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    side = 11_000  # 121 million pixels: 363 MB decoded, from a file of a few hundred kB
    bomb = write_black_png(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 2_000_000 and side * side > DEFAULT_MAX_PIXELS
    with pytest.raises(InputError, match=r"bomb\.png: 121,000,000 pixels, more than the limit") as info:
        read_image(bomb)
    assert "image.max_pixels" in str(info.value)


def test_the_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((30, 40, 3), np.uint8))
    assert read_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(InputError, match="1,200 pixels, more than the limit of 1,199"):
        read_image(path, max_pixels=1199)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a directory, not an image file"),
        (lambda p: p.symlink_to(p), "symbolic link loop"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
        (lambda p: p.write_text("text"), "not a readable image"),
    ],
)
def test_paths_that_are_not_images(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "photo.jpg"
    make(path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message) as info:
        read_image(path)
    assert str(info.value).count(str(path)) == 1
