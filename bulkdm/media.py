"""What a DM may attach: the file types Xquik takes, told by a file's first bytes.

A campaign row names its media file, and rows come from outside (a CRM export, a sheet). Its
name says nothing: ``/proc/self/environ`` or a key file is a regular file too, and uploading it
would hand its content to the recipient. So the planner and the upload both read the file's
first bytes, and only an image or video of a type X takes is ever uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "MAX_MEDIA_BYTES", "MEDIA_TYPES_TEXT", "MediaProblem", "check_media", "media_type",
    "type_or_problem",
]

#: Xquik's limit on an uploaded file ("The file limit is 15,728,640 bytes")
MAX_MEDIA_BYTES: Final = 15_728_640
#: the types Xquik's upload takes, for messages
MEDIA_TYPES_TEXT: Final = "AVIF, GIF, JPEG, PNG, WebP or MP4"
#: enough of a file to tell its type
_HEAD_BYTES: Final = 16
#: the ISO media ``ftyp`` brands of MP4 files (AVIF shares the box and has its own brands)
_MP4_BRANDS: Final = frozenset({
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ",
    b"mmp4", b"dash", b"MSNV", b"f4v ",
})


@dataclass(frozen=True, kw_only=True, slots=True)
class MediaProblem:
    """Why a file cannot be attached: a reason code and a sentence naming the file."""

    code: str
    message: str


def media_type(head: bytes) -> str | None:
    """The MIME type of a file that starts with ``head`` (its first bytes, or all of it) when it
    is one Xquik takes, else ``None``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in _MP4_BRANDS:
            return "video/mp4"
    return None


def check_media(path: Path) -> MediaProblem | str:
    """The MIME type of the file at ``path`` if it may be attached, or why not: missing or not
    a regular file (``media_not_found``), not an image or video Xquik takes (``media_type``),
    empty or over the limit (``media_size``)."""
    if not path.is_file():  # a folder, a pipe, a device: never read
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        return MediaProblem(code="media_not_found", message=f"the media file {path} {what}")
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD_BYTES)
            size = path.stat().st_size
    except OSError as exc:
        return MediaProblem(code="media_unreadable",
                            message=f"cannot read the media file {path}: {exc.strerror or exc}")
    return type_or_problem(path, head, size)


def type_or_problem(path: Path, head: bytes, size: int) -> MediaProblem | str:
    """:func:`check_media` on what was read of the file: its first bytes (or all of it) and its
    size."""
    kind = media_type(head)
    if kind is None:
        return MediaProblem(code="media_type", message=(
            f"the media file {path} is not an image or video X takes ({MEDIA_TYPES_TEXT}): "
            "its first bytes say otherwise"))
    if not 0 < size <= MAX_MEDIA_BYTES:
        return MediaProblem(code="media_size", message=(
            f"the media file {path} has {size} bytes; Xquik takes 1 to {MAX_MEDIA_BYTES}"))
    return kind
