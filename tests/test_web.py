"""The browser renderer's routes (p2p_demo/web.py): headers, listing, manifests, files and refusals."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from conftest import MODELS, OFFLINE, make_weights, serve

from p2p_demo import webrt


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
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
    assert get(url + f"/p2p/ort/{webrt.VERSION}/secret.txt")[0] == 404
    status, _, body = get(url + f"/p2p/ort/{webrt.VERSION}/LICENSE")
    assert status == 200 and b"MIT License" in body
    if webrt.available():
        status, headers, _ = get(url + f"/p2p/ort/{webrt.VERSION}/ort-wasm-simd-threaded.wasm")
        assert status == 200 and headers["content-type"] == "application/wasm"


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
    assert sorted(os.listdir(where)) == sorted([*webrt.FILES, webrt.LICENSE])  # no temp file left
    assert (where / webrt.FILES[0]).read_text() == f"contents of {webrt.FILES[0]}"
    assert (where / webrt.LICENSE).read_text(encoding="utf-8") == webrt.licence_text()
