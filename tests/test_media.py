"""A row's media file: only an image or video of a type X takes is ever uploaded.

Rows come from outside (a CRM export, a sheet), and a media path can name any file the process
may read: ``/proc/self/environ`` holds the API key. A file that is not a picture or a video must
be refused by the plan, and again by the upload when the file changed after the plan.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from bulkdm.media import MAX_MEDIA_BYTES, media_type
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, env_for, write_campaign
from tests.enginekit import planned, run_engine, settings_for, states, write_plan

PNG = b"\x89PNG\r\n\x1a\n" + bytes(8)
SECRET = "xq_live_do_not_send_7f3a"


@pytest.mark.parametrize(("head", "kind"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    (PNG, "image/png"),
    (b"GIF89a\x01\x00\x01\x00", "image/gif"),
    (b"GIF87a\x01\x00\x01\x00", "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "image/avif"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "video/mp4"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "video/mp4"),
])
def test_a_picture_or_video_is_told_by_its_first_bytes(head: bytes, kind: str) -> None:
    assert media_type(head) == kind


@pytest.mark.parametrize("head", [
    b"", b"XQUIK_API_KEY=xq_live", b"-----BEGIN OPENSSH PRIVATE KEY-----",
    b"\x89PNG",  # cut short
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",  # HEIC: X does not take it
    b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00",  # QuickTime
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
])
def test_anything_else_is_no_media(head: bytes) -> None:
    assert media_type(head) is None


async def test_the_plan_refuses_media_that_is_no_picture_naming_the_line_and_field(
    tmp_path: Path,
) -> None:
    (tmp_path / "env.png").write_text(f"XQUIK_API_KEY={SECRET}\n")  # its name says picture
    (tmp_path / "pics").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    with (tmp_path / "big.png").open("wb") as big:  # sparse: no 15 MB written
        big.write(PNG)
        big.truncate(MAX_MEDIA_BYTES + 1)
    (tmp_path / "ok.png").write_bytes(PNG)
    media = ["env.png", "pics", "empty.png", "big.png", "/proc/self/environ", "ok.png"]
    campaign = write_campaign(tmp_path, [
        {"recipient_username": f"user_{i}", "first_name": "A", "media": m}
        for i, m in enumerate(media)], url="http://127.0.0.1:9/api/v1")
    env = {**env_for(), "XQUIK_API_KEY": SECRET}
    done = await bulkdm("plan", str(campaign), "--json", env=env)
    report = orjson.loads(done.stdout)
    invalid = {r["line"]: (r["field"], r["reason"]) for r in report["invalid_rows"]}
    assert invalid == {1: ("media", "media_type"), 2: ("media", "media_not_found"),
                       3: ("media", "media_type"), 4: ("media", "media_size"),
                       5: ("media", "media_type")}
    assert report["rows"]["valid"] == 1
    messages = {r["line"]: r["message"] for r in report["invalid_rows"]}
    assert "is a folder" in messages[2] and "has 15728641 bytes" in messages[4]
    assert SECRET not in done.stdout + done.stderr


async def test_a_media_file_changed_after_the_plan_is_refused_by_the_upload(
    tmp_path: Path,
) -> None:
    # planned as a picture, then overwritten with something else before the run: the upload
    # reads the bytes it would send and fails the row instead
    path = tmp_path / "c.sqlite"
    picture = tmp_path / "pic.png"
    picture.write_bytes(PNG)
    await write_plan(path, [replace(planned(1, sender="alice", recipient_id="6300"),
                                    media=str(picture)),
                            planned(2, sender="alice", recipient_id="6301")])
    picture.write_text(f"XQUIK_API_KEY={SECRET}\n")
    async with running_sandbox() as sb:
        await run_engine(settings_for(sb), path)
        assert sb.uploads == {}
        assert [d.recipient_id for d in sb.ledger] == ["6301"]  # the other row went on
    assert (await states(path))[1] == ("failed", "media_type")


def test_the_example_campaigns_picture_is_one() -> None:
    example = Path(__file__).parent.parent / "campaigns" / "welcome.png"
    assert media_type(example.read_bytes()[:16]) == "image/png"
    assert os.path.getsize(example) <= MAX_MEDIA_BYTES
