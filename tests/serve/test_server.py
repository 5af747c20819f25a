"""`tubelet serve` as a client meets it: one real server process on loopback for the module,
spoken to over HTTP with the standard library."""

from __future__ import annotations

import base64
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import tubelet
from tubelet.data.synth import CLASSES
from tubelet.inference.pipeline import Pipeline

from .conftest import running_server

QUEUE, BATCH = 2, 2


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    with running_server(tiny_checkpoint, "--queue", str(QUEUE), "--batch", str(BATCH), "--max-upload-mb", "0.25",
                        "--device", "cpu", tmp=tmp_path_factory.mktemp("serve-tmp")) as served:
        yield served


@pytest.fixture(scope="module")
def expected(tiny_checkpoint, clip):
    return tubelet.pipeline(tiny_checkpoint, device="cpu")(clip)


def assert_same_labels(got, want):
    assert [t["label"] for t in got] == [t["label"] for t in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) < 1e-5


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_model_and_health(server):
    status, model = server.get("v1/model")
    assert status == 200 and model["name"] == "tiny" and model["architecture"] == "vivit_micro"
    assert model["heads"] == [{"name": None, "classes": CLASSES}]
    assert model["preprocessing"]["frames"] == 4 and model["preprocessing"]["stride"] == 1
    assert model["preprocessing"]["size"] == [32, 32] and model["top_k"] == 5
    status, health = server.get("healthz")
    assert status == 200 and health["status"] == "ok" and health["capacity"] == QUEUE + BATCH


def test_the_page_is_one_self_contained_file(server):
    import urllib.request
    with urllib.request.urlopen(server.url, timeout=10) as r:
        page = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html") and 'id="file"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


def test_classification_equals_the_pipeline(server, clip, expected):
    data = clip.read_bytes()
    status, body, _ = server.upload(data)
    assert status == 200 and body["model"] == "tiny" and body["seconds"] > 0
    assert_same_labels(body["top"], expected)
    status, raw, _ = server.post(data, "video/mp4")  # the raw body
    assert status == 200
    assert_same_labels(raw["top"], expected)
    before = server.get("healthz")[1]
    with ThreadPoolExecutor(QUEUE + BATCH) as pool:  # as many as it takes at once: batched, each as alone
        answers = list(pool.map(lambda _: server.upload(data), range(QUEUE + BATCH)))
    for status, body, _ in answers:
        assert status == 200
        assert_same_labels(body["top"], expected)
    after = server.get("healthz")[1]
    assert after["answered"] - before["answered"] == QUEUE + BATCH


def test_the_attention_map_when_asked(server, clip, expected):
    if not hasattr(Pipeline, "explain"):
        pytest.skip("Pipeline.explain (attention maps) is not in this tubelet yet")
    for status, body, _ in (server.upload(clip.read_bytes(), fields={"explain": "1"}),
                            server.post(clip.read_bytes(), "video/mp4", path="v1/classify?explain=1")):
        assert status == 200
        assert_same_labels(body["top"], expected)
        explain = body["explain"]
        assert (explain["frames"], explain["height"], explain["width"]) == (4, 32, 32)
        assert len(explain["images"]) == 4 and all(i.startswith("data:image/png;base64,") for i in explain["images"])
        t, h, w = explain["map"]["shape"]
        assert t == 4 and len(base64.b64decode(explain["map"]["data"])) == t * h * w
        assert abs(sum(explain["frame_mass"]) - 1) < 1e-4
    assert "explain" not in server.upload(clip.read_bytes())[1]


def test_bad_uploads_are_answered_with_their_status_and_leave_no_file(server, clip):
    data = clip.read_bytes()
    status, body, _ = server.upload(b"\0" * 300_000)  # over --max-upload-mb 0.25, declared
    assert status == 413 and "--max-upload-mb" in body["error"]
    status, body, _ = server.post((b"\0" * 65536 for _ in range(5)), "video/mp4")  # chunked: found while streaming
    assert status == 413 and "limit of 0.25 MB" in body["error"]
    status, body, _ = server.upload(b"hello, this is text\n" * 20, "notes.txt", "text/plain")
    assert status == 415 and "notes.txt" in body["error"] and "not a video" in body["error"]
    status, body, _ = server.post(b"hello, this is text\n" * 20, "application/octet-stream")  # found by decoding
    assert status == 415 and "not a video" in body["error"]
    status, body, _ = server.upload(data[:len(data) // 2], "half.mp4")
    assert status == 422 and body["error"].startswith("cannot decode half.mp4")
    assert str(server.uploads) not in body["error"]  # the client's name, not the temporary file's
    status, body, _ = server.upload(b"")
    assert status == 400 and "empty" in body["error"]
    status, body, _ = server.post(b"", "video/mp4")
    assert status == 400 and "empty" in body["error"]
    status, body, _ = server.post(b"--x--\r\n", "multipart/form-data; boundary=x")
    assert status == 400 and "no `video` field" in body["error"]
    wait_until(lambda: server.get("healthz")[1]["in_flight"] == 0)
    assert server.uploads.is_dir() and list(server.uploads.iterdir()) == []


def slow_upload(port: int) -> socket.socket:
    """A client that declares a 100,000-byte upload and sends 10 bytes of it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 100000\r\n\r\n"
              + b"\0" * 10)
    return s


def test_a_full_server_answers_503_with_retry_after(server, clip):
    capacity = QUEUE + BATCH
    slow = [slow_upload(server.port) for _ in range(capacity)]
    try:
        wait_until(lambda: server.get("healthz")[1]["in_flight"] == capacity)
        status, body, headers = server.upload(clip.read_bytes())
        assert status == 503 and int(headers["Retry-After"]) >= 1 and "busy" in body["error"]
    finally:
        for s in slow:  # clients that leave during their upload free their places and files
            s.close()
    wait_until(lambda: server.get("healthz")[1]["in_flight"] == 0)
    assert list(server.uploads.iterdir()) == []
    assert server.upload(clip.read_bytes())[0] == 200
