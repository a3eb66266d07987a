"""Data loading fails clearly (DataError naming the file) and never silently."""

from __future__ import annotations

import hashlib
import io
import urllib.request

import pytest

from workbench import data
from workbench.data import DATA_DIR_VARIABLE, SHAKESPEARE_FILE, DataError, read_text, shakespeare_path
from workbench.tasks import build_task
from workbench.tasks.charlm import CharVocab


def test_read_text_reads_utf8(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("héllo wörld\n", encoding="utf-8")
    assert read_text(path) == "héllo wörld\n"
    assert read_text(str(path)) == "héllo wörld\n"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"some text\x00\x01\x02 more", "looks binary"),
        (b"caf\xe9 au lait", "not valid UTF-8"),
        (b"\xff\xfe\xfa", "not valid UTF-8"),
    ],
    ids=["missing", "empty", "binary", "latin-1", "garbage"],
)
def test_read_text_fails_clearly(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_text(path)
    assert str(path) in str(info.value)


def test_invalid_utf8_message_says_where(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"abcdef\xe9gh")
    with pytest.raises(DataError, match="at byte 6"):
        read_text(path)


def test_charlm_task_passes_data_errors_through(tmp_path):
    path = tmp_path / "binary.bin"
    path.write_bytes(b"\x00" * 5000)
    with pytest.raises(DataError, match="looks binary") as info:
        build_task("charlm", {"path": str(path), "context": 8})
    assert str(path) in str(info.value)


def test_char_vocab_round_trip_and_unknown_characters():
    vocab = CharVocab("abc ")
    ids = vocab.encode("a cab")
    assert ids.tolist() == [0, 3, 2, 0, 1]
    assert vocab.decode(ids) == "a cab" and vocab.decode([2, 1]) == "cb"
    with pytest.raises(ValueError, match="2 character") as info:
        vocab.encode("abz!")
    assert "'z'" in str(info.value) and "'!'" in str(info.value)
    with pytest.raises(ValueError, match=r"'\\n'"):
        vocab.encode("a\n")


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch):
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(directory))
    return directory


def test_data_dir_follows_the_environment(empty_data_dir):
    assert data.data_dir() == empty_data_dir


def test_shakespeare_path_offline_says_where_to_put_the_file(empty_data_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        shakespeare_path()
    message = str(info.value)
    assert str(empty_data_dir / SHAKESPEARE_FILE) in message
    assert DATA_DIR_VARIABLE in message and "network is unreachable" in message
    assert not any(empty_data_dir.iterdir()), "a failed download left files behind"
    with pytest.raises(DataError, match=DATA_DIR_VARIABLE):
        shakespeare_path(download=False)


def test_shakespeare_path_uses_a_file_already_there(empty_data_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is there")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    path = empty_data_dir / SHAKESPEARE_FILE
    path.write_text("First Citizen:\n", encoding="utf-8")
    assert shakespeare_path() == path


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_with_wrong_checksum_is_refused(empty_data_dir, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(b"not shakespeare"))
    with pytest.raises(DataError, match="sha256 does not match"):
        shakespeare_path()
    assert not any(empty_data_dir.iterdir()), "the rejected download was kept"


def test_download_with_right_checksum_is_kept(empty_data_dir, monkeypatch):
    body = b"To be, or not to be\n"
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(body))
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(body).hexdigest())
    path = shakespeare_path()
    assert path == empty_data_dir / SHAKESPEARE_FILE and path.read_bytes() == body
    assert sorted(p.name for p in empty_data_dir.iterdir()) == [SHAKESPEARE_FILE]


def test_charlm_defaults_to_the_file_in_the_data_dir(empty_data_dir, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    text = "Now is the winter of our discontent\n" * 40
    (empty_data_dir / SHAKESPEARE_FILE).write_text(text, encoding="utf-8")
    task = build_task("charlm", {"context": 16})
    assert task.vocab.chars == "".join(sorted(set(text)))
    assert len(task.train_data) + len(task.val_data) == len(text)
