"""Fetching a public archive: md5 check, safe unpacking, reuse (on a local file:// archive)."""

import hashlib
import io
import tarfile

import pytest

from qrp_core.demos.datasets import Archive, fetch
from qrp_core.errors import InputError


def _archive(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "set.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_fetch_checks_md5_unpacks_and_reuses(tmp_path):
    path, md5 = _archive(tmp_path, {"set/val/cat/a.jpg": b"x", "set/val/dog/b.jpg": b"y", "set/train/c.jpg": b"z"})
    archive = Archive(path.as_uri(), md5, "set/val")
    folder = fetch(archive, tmp_path / "data", show_progress=False)
    assert folder == tmp_path / "data" / "set" / "val"
    assert sorted(p.name for p in folder.rglob("*.jpg")) == ["a.jpg", "b.jpg"]
    path.unlink()  # a second fetch reuses the unpacked folder without downloading
    assert fetch(archive, tmp_path / "data", show_progress=False) == folder
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["set"]  # no temporary files left


def test_fetch_refuses_a_wrong_checksum_and_leaves_nothing(tmp_path):
    path, _ = _archive(tmp_path, {"set/val/a.jpg": b"x"})
    with pytest.raises(InputError, match="differs from the published"):
        fetch(Archive(path.as_uri(), "0" * 32, "set/val"), tmp_path / "data", show_progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_fetch_refuses_paths_outside_its_folder(tmp_path):
    path, md5 = _archive(tmp_path, {"../evil.txt": b"x", "set/val/a.jpg": b"y"})
    with pytest.raises(InputError, match="cannot unpack the archive safely"):
        fetch(Archive(path.as_uri(), md5, "set/val"), tmp_path / "data", show_progress=False)
    assert not (tmp_path / "evil.txt").exists()
