"""The browser renderer's routes (p2p_demo/web.py): headers, listing, manifests, files and refusals."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from conftest import MODELS, OFFLINE, make_weights, serve

from p2p_demo import webrt


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with serve(make_weights(tmp_path_factory.mktemp("weights"), size=256)) as u:
        yield u.rstrip("/")


def test_every_response_is_cross_origin_isolated(url):
    for path in ("/", "/p2p/models.json", "/p2p/js/nope.js"):
        _, headers, _ = get(url + path)
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"


def test_listing_manifest_and_onnx(url):
    status, _, body = get(url + "/p2p/models.json")
    listing = json.loads(body)
    assert status == 200 and listing["runtime"]["version"] == webrt.VERSION
    by_id = {m["id"]: m for m in listing["models"]}
    assert by_id[MODELS[0]]["browser"] is True
    assert by_id[OFFLINE]["browser"] is False and "server" in by_id[OFFLINE]["why"]
    status, _, body = get(f"{url}/p2p/model/{MODELS[0]}.json")
    manifest = json.loads(body)
    assert status == 200 and manifest["style"] == {"size": 256, "stroke_width": 2, "margin": 0.06}
    assert manifest["plan"]["inputs"] == [f"mask{i}" for i in range(len(manifest["plan"]["layers"]))]
    status, headers, onnx = get(f"{url}/{manifest['onnx']}")
    assert status == 200 and len(onnx) == manifest["bytes"] and "immutable" in headers["cache-control"]
    assert get(f"{url}/p2p/model/{MODELS[0]}/{'0' * 32}.onnx")[0] == 404  # only files a manifest named
    status, _, body = get(f"{url}/p2p/model/{OFFLINE}.json")
    assert status == 409 and "server" in json.loads(body)["error"]
    assert get(f"{url}/p2p/model/no-such-model.json")[0] == 404


def test_scripts_and_runtime_files(url):
    status, headers, body = get(url + "/p2p/js/p2p_masks.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and b"mix32" in body
    assert get(url + "/p2p/js/../web.py")[0] == 404
    assert get(url + f"/p2p/ort/{webrt.TAG}/secret.txt")[0] == 404
    assert get(url + f"/p2p/ort/{webrt.VERSION}/ort.wasm.min.mjs")[0] == 404  # the tag names the content
    status, _, body = get(url + f"/p2p/ort/{webrt.TAG}/LICENSE")
    assert status == 200 and b"MIT License" in body


@pytest.mark.skipif(not webrt.available(), reason="ONNX Runtime Web is not installed (python -m p2p_demo fetch-web-runtime)")
def test_runtime_files_travel_compressed(url):
    """The WASM binary as the browser asks for it: brotli, gzip or plain, always the same bytes, cached
    for good under its content-named URL."""
    import gzip

    import brotli

    wasm = f"{url}/p2p/ort/{webrt.TAG}/ort-wasm-simd-threaded.wasm"
    plain = (webrt.folder() / "ort-wasm-simd-threaded.wasm").read_bytes()
    for accept, coding, decode in [("gzip, deflate, br, zstd", "br", brotli.decompress),
                                   ("gzip, deflate", "gzip", gzip.decompress),
                                   ("br;q=0, gzip;q=0.5", "gzip", gzip.decompress),
                                   ("identity", None, bytes), ("", None, bytes)]:
        status, headers, body = get(wasm, {"Accept-Encoding": accept})
        assert status == 200 and headers["content-type"] == "application/wasm", accept
        assert headers.get("content-encoding") == coding, accept
        assert "immutable" in headers["cache-control"] and "accept-encoding" in headers["vary"].lower()
        assert decode(body) == plain
        if coding:
            assert len(body) < len(plain) / 3, (coding, len(body))  # 14 MB -> 2.7 MB (br), 3.7 MB (gzip)
    status, headers, body = get(f"{url}/p2p/ort/{webrt.TAG}/ort.wasm.min.mjs", {"Accept-Encoding": "br"})
    assert headers["content-type"].startswith("text/javascript") and headers["content-encoding"] == "br"
    assert brotli.decompress(body) == (webrt.folder() / "ort.wasm.min.mjs").read_bytes()


def test_model_file_travels_compressed(url):
    import gzip

    import brotli

    manifest = json.loads(get(f"{url}/p2p/model/{MODELS[0]}.json")[2])
    assert manifest["weights"] == "fp32"  # the tiny test models' weights are not fp16 numbers
    plain = get(f"{url}/{manifest['onnx']}")[2]
    assert len(plain) == manifest["bytes"]
    for accept, coding, decode in [("gzip, br", "br", brotli.decompress), ("gzip", "gzip", gzip.decompress)]:
        status, headers, body = get(f"{url}/{manifest['onnx']}", {"Accept-Encoding": accept})
        assert status == 200 and headers["content-encoding"] == coding and "immutable" in headers["cache-control"]
        assert decode(body) == plain and len(body) == manifest["transfer"][coding]


@pytest.mark.parametrize("header, offered, expected", [
    ("gzip, deflate, br", ("br", "gzip"), "br"),
    ("gzip", ("br", "gzip"), "gzip"),
    ("br;q=0, gzip", ("br", "gzip"), "gzip"),
    ("BR ; q=0.8", ("br", "gzip"), "br"),
    ("*", ("br", "gzip"), "br"),
    ("*, br;q=0", ("br", "gzip"), "gzip"),
    ("identity", ("br", "gzip"), None),
    ("", ("br", "gzip"), None),
    ("gzip;q=nonsense", ("br", "gzip"), None),
])
def test_accept_encoding(header, offered, expected):
    from starlette.requests import Request

    from p2p_demo.web import accepted

    request = Request({"type": "http", "headers": [(b"accept-encoding", header.encode())]})
    assert accepted(request, offered) == expected


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_the_browser_gets_fp16_weights_only_when_they_are_exact(upsample):
    """The bundled models store fp16 weights: their browser file holds them as fp16 (half the bytes)
    and computes exactly what the fp32 file does. Weights fp16 cannot hold keep the fp32 file. A
    resize-conv decoder ships its 3x3 weights (the runtime folds them into 4x4 transposed kernels
    once, at load), so its file is the smaller one."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from conftest import tiny_generator

    from p2p_demo import fast
    from p2p_demo.web import browser_onnx

    g = tiny_generator(upsample=upsample)
    exact = fast.export_onnx(g)
    if upsample == "resize":
        twin = fast.export_onnx(tiny_generator())  # the same net with transposed convolutions
        assert len(exact) < 0.75 * len(twin)
    assert browser_onnx(exact) == (exact, "fp32")  # random fp32 weights: not fp16 numbers
    with torch.no_grad():
        for p in g.parameters():
            p.copy_(p.half().float())
    data = fast.export_onnx(g)
    half, variant = browser_onnx(data)
    assert variant == "fp16" and len(half) < 0.6 * len(data)
    plan = fast.DropoutPlan.of(g)
    feed = {"x": np.random.default_rng(0).uniform(-1, 1, (2, g.config.in_channels, 64, 64)).astype(np.float32),
            **{f"mask{i}": m.numpy() for i, m in enumerate(plan.draw([1, 2], 64, 64))}}
    runs = [ort.InferenceSession(d, providers=["CPUExecutionProvider"]).run(["y"], feed)[0] for d in (data, half)]
    assert runs[0].std() > 0.01 and np.array_equal(runs[0], runs[1])


def test_fetch_checks_integrity_and_lands_every_file_whole(tmp_path, monkeypatch):
    """webrt.fetch with a stand-in npm: the pinned integrity decides, then each file is written
    atomically into the runtime folder (which may be on another file system than the download)."""
    import base64
    import hashlib
    import io
    import os
    import tarfile

    pack = tmp_path / "pack"
    pack.mkdir()
    tgz = pack / f"{webrt.PACKAGE}-{webrt.VERSION}.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in webrt.FILES:
            data = f"contents of {name}".encode()
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    npm = tmp_path / "npm"
    npm.write_text(f"#!/bin/sh\ncp {tgz} .\n")
    npm.chmod(0o755)
    where = tmp_path / "cache" / "runtime"
    with pytest.raises(webrt.RuntimeMissing, match="does not match the pinned integrity"):
        webrt.fetch(where, npm=str(npm))
    assert not webrt.available(where)
    monkeypatch.setattr(webrt, "INTEGRITY", "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode())
    assert webrt.fetch(where, npm=str(npm)) == where
    # No temp file left; each file's compressed copies beside it.
    assert sorted(os.listdir(where)) == sorted([*webrt.FILES, webrt.LICENSE, *(f"{name}{suffix}" for name in webrt.FILES
                                                                            for suffix in (".br", ".gz"))])
    assert (where / webrt.FILES[0]).read_text() == f"contents of {webrt.FILES[0]}"
    assert (where / webrt.LICENSE).read_text(encoding="utf-8") == webrt.licence_text()


@pytest.fixture()
def fresh_runtime(tmp_path, monkeypatch):
    """An empty runtime folder, and the app-start fetch's state as a fresh process has it."""
    monkeypatch.setenv(webrt.ENV, str(tmp_path / "runtime"))
    monkeypatch.setitem(webrt._fetch, "thread", None)
    monkeypatch.setitem(webrt._fetch, "error", None)
    return tmp_path / "runtime"


@pytest.mark.parametrize("npm", ["no-such-npm", "bad-hash"])
def test_a_failed_fetch_at_start_leaves_server_rendering_and_one_log_line(fresh_runtime, tmp_path, npm, caplog):
    """No npm, or a tarball that is not the pinned one: never an exception, one warning saying why,
    and the page is told why it renders on the server."""
    if npm == "bad-hash":
        fake = tmp_path / "npm"
        fake.write_text(f"#!/bin/sh\necho tampered > {webrt.PACKAGE}-{webrt.VERSION}.tgz\n")
        fake.chmod(0o755)
        npm = str(fake)
    assert webrt.state() is webrt.State.MISSING
    with caplog.at_level("INFO", logger="p2p_demo.webrt"):
        thread = webrt.fetch_in_background(npm=npm)
        thread.join(60)
    assert webrt.state() is webrt.State.FAILED and not webrt.available()
    lines = [r for r in caplog.records if r.name == "p2p_demo.webrt"]
    assert len(lines) == 1 and lines[0].levelname == "WARNING", [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert message.startswith("rendering in the browser is off, drawings render on the server: ")
    assert ("npm is not installed" if npm == "no-such-npm" else "does not match the pinned integrity") in message
    assert webrt.why().startswith("ONNX Runtime Web could not be fetched (")


def test_the_page_learns_when_the_runtime_is_ready(fresh_runtime, tmp_path, monkeypatch, caplog):
    """While the app fetches the runtime the listing says so (the page renders on the server and asks
    again); once it has landed, compressed, the listing says the browser may render."""
    import base64
    import hashlib
    import io
    import tarfile

    from p2p_demo.web import BrowserModels

    tgz = tmp_path / f"{webrt.PACKAGE}-{webrt.VERSION}.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in webrt.FILES:
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"file"))
    monkeypatch.setattr(webrt, "INTEGRITY", "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode())
    gate = tmp_path / "go"
    npm = tmp_path / "npm"  # waits until the test lets it deliver
    npm.write_text(f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\ncp {tgz} .\n")
    npm.chmod(0o755)

    class Manager:
        def choices(self):
            return []

    web = BrowserModels(Manager())
    with caplog.at_level("INFO", logger="p2p_demo.webrt"):
        thread = webrt.fetch_in_background(npm=str(npm))
        assert webrt.fetch_in_background(npm=str(npm)) is None  # one fetch at a time
        runtime = web.listing()["runtime"]
        assert runtime["available"] is False and runtime["state"] == "fetching"
        assert "switches to your browser when it is ready" in runtime["why"]
        gate.touch()
        thread.join(60)
    runtime = web.listing()["runtime"]
    assert runtime == {"available": True, "state": "ready", "version": webrt.VERSION, "base": f"p2p/ort/{webrt.TAG}/"}
    assert all(webrt.compressed(fresh_runtime / name, "br") for name in webrt.FILES)
    assert [r.levelname for r in caplog.records if r.name == "p2p_demo.webrt"] == ["INFO", "INFO"]  # fetched; on
    assert webrt.fetch_in_background(npm=str(npm)) is None  # nothing left to do
