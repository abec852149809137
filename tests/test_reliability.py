"""Reliability and security: load, faults and hostile input; nothing lost, nothing executed.

The app runs in-process on 127.0.0.1 (conftest's tiny models and ``serve``) with broken models added
to its registry. Covered elsewhere and not repeated here:

* the bad uploads empty / text / truncated PNG / 100000² bomb / blank, and 16-bit, CMYK, palette and
  animated GIF renders through /render: test_app.py::test_bad_file_is_explained_and_the_server_keeps_serving,
  ::test_awkward_but_valid_images_render; "../weights/tiny-cats" as a model: ::test_bad_options_are_refused;
  the offline Hub in the service: ::test_offline_hub_model_keeps_the_current_one;
* the loader's refusals (pickles that run code, truncated safetensors and .pth, shapes that disagree
  with the config): test_hub.py; CUDA OOM -> smaller batches -> CPU: test_fast.py::
  test_cuda_out_of_memory_retries_smaller_batches_then_the_cpu;
* checkpoints: a SIGKILL inside save_checkpoint and a full disk at the save_checkpoint level:
  test_train.py::test_sigkill_while_saving_leaves_the_old_checkpoint_loadable,
  ::test_disk_full_keeps_the_previous_checkpoint; stop + --resume == uninterrupted:
  ::test_resume_equals_uninterrupted; corrupt dataset files skipped and reported: test_prepare.py::
  test_openmoji_flags_duplicates_and_corrupt_files_are_reported, ::test_folder_of_photos_skips_truncated_jpeg;
* the command line's exit status in a real process: test_cli.py::test_process_exit_status_and_single_line
  (here main() is called in-process).
"""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import random
import shutil
import signal
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from hostile import HUGE, THIN, arrow, arrow_direction, corpus, encode
from p2p_demo.nets import GeneratorConfig
from conftest import CAT, MODELS, OFFLINE, SIZE, RunsCode, diff, make_dataset, make_weights, put_in_hf_cache, render, serve

ROOT = Path(__file__).resolve().parent.parent
QUEUE = 2  # the app's queue in these tests: small, so a burst of users overflows it
EVIL_HUB = "evil-hub"  # a cached Hub download: a .bin pickle that runs code when unpickled
BROKEN = {  # registry id -> the words of the refusal the model switch shows
    "broken-truncated": "truncated or corrupt",
    "broken-arch": "does not match",
    EVIL_HUB: "refused: it needs arbitrary code",
    # the same pickle as model.safetensors: torch.load reads that name as safetensors and fails
    "broken-pickle": "Could not load broken-pickle",
    "vanishing": "no model.safetensors",  # installed at start, its weights deleted while serving
    OFFLINE: "Could not download",
}
NOT_INSTALLED = "not-installed"  # listed in the registry, no folder: never offered


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """conftest's two tiny models and offline Hub entry, plus broken models in the same registry."""
    from safetensors.torch import load_file

    root = make_weights(tmp_path_factory.mktemp("weights"))
    good = root / MODELS[0]

    def clone(name: str) -> Path:
        shutil.copytree(good, root / name)
        cfg = json.loads((root / name / "config.json").read_text())
        cfg["name"] = name
        (root / name / "config.json").write_text(json.dumps(cfg))
        return root / name

    weights_file = clone("broken-truncated") / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
    cfg_file = clone("broken-arch") / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["generator"]["ngf"] = 16  # the weights are ngf 8
    cfg_file.write_text(json.dumps(cfg))
    # A state_dict plus an object whose unpickling would run code: a Hub .bin, and a bundled model.
    evil = io.BytesIO()
    torch.save({**load_file(good / "model.safetensors"), "extra": RunsCode(root / "code-ran.txt")}, evil)
    put_in_hf_cache(root / "hf-cache", "p2p-demo-tests/evil", {"pytorch_model.bin": evil.getvalue()})
    (clone("broken-pickle") / "model.safetensors").write_bytes(evil.getvalue())
    clone("vanishing")
    registry = json.loads((root / "registry.json").read_text())
    registry["models"] += [{"id": i, "source": "bundled", "folder": i} for i in BROKEN if i not in (OFFLINE, EVIL_HUB)]
    registry["models"].append({"id": EVIL_HUB, "source": "hub", "repo_id": "p2p-demo-tests/evil", "name": EVIL_HUB,
                               "filename": "pytorch_model.bin",
                               "generator": GeneratorConfig(ngf=8, num_downs=6).to_dict()})
    registry["models"].append({"id": NOT_INSTALLED, "source": "bundled", "folder": NOT_INSTALLED})
    (root / "registry.json").write_text(json.dumps(registry))
    return root


@pytest.fixture(scope="module")
def url(weights):
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(weights / "hf-cache"))
        with serve(weights, max_queue=QUEUE) as u:
            yield u


@pytest.fixture(scope="module")
def client(url, tmp_path_factory):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")),
                  httpx_kwargs={"timeout": 120})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def upright(tmp_path_factory) -> Path:
    """The arrow as a plain PNG: what every valid hostile file must render like."""
    path = tmp_path_factory.mktemp("upright") / "arrow.png"
    path.write_bytes(encode(arrow(), "PNG"))
    return path


def rest_call(url: str, data: list, api_name: str = "render", timeout: float = 120) -> tuple[str, object]:
    """/render through Gradio's REST API with a raw JSON payload: ("complete" | "error", data or message)."""
    r = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=timeout)
    r.raise_for_status()
    text = httpx.get(f"{url}gradio_api/call/{api_name}/{r.json()['event_id']}", timeout=timeout).text
    event = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("event:"))
    payload = json.loads(next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("data:")))
    return event, (payload.get("error") if isinstance(payload, dict) else payload)


def browser_event(url: str, api_name: str, data: list, timeout: float = 120) -> tuple[bool, list, list[str]]:
    """Fire one of the UI's (private) events as the browser does: queue/join, then the SSE stream.

    Returns (success, output data, the toasts shown: gr.Warning / gr.Error texts).
    """
    deps = httpx.get(f"{url}config", timeout=timeout).json()["dependencies"]
    return queue_call(url, next(d["id"] for d in deps if d.get("api_name") == api_name), data, timeout)


def queue_call(url: str, fn_index: int, data: list, timeout: float = 120,
               http: httpx.Client | None = None) -> tuple[bool, list, list[str]]:
    """browser_event by the event's number in the app's config (over ``http``, a kept connection)."""
    http = http or httpx
    session = uuid.uuid4().hex
    r = http.post(f"{url}gradio_api/queue/join", timeout=timeout,
                   json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                         "trigger_id": None})
    r.raise_for_status()
    toasts = []
    with http.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as s:
        for line in s.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "log":
                toasts.append(msg.get("log") or "")
            if msg.get("msg") == "process_completed":
                out = msg.get("output") or {}
                if out.get("error"):
                    toasts.append(out["error"])
                return bool(msg.get("success")), out.get("data") or [], toasts
    raise AssertionError("the event stream ended without a result")


# ---------------------------------------------------------------------------------------------
# The hostile corpus is what it claims to be


def test_corpus_files_are_what_they_claim(files):
    raw = Image.open(files["exif_rotated_jpeg"].path)
    assert raw.getexif()[0x0112] == 6 and arrow_direction(np.asarray(raw)) == "up"  # stored turned
    assert arrow_direction(arrow()) == "right"
    modes = {"gray16_png": "I;16", "cmyk_jpeg": "CMYK", "palette_png": "P", "la_png": "LA"}
    for name, mode in modes.items():
        assert Image.open(files[name].path).mode == mode, name
    assert Image.open(files["animated_gif"].path).n_frames == 2
    bomb = files["bomb_20000_png"].path
    assert bomb.stat().st_size < 1000
    assert int.from_bytes(bomb.read_bytes()[16:20], "big") == int.from_bytes(bomb.read_bytes()[20:24], "big") == 20_000
    assert files["zero_bytes_png"].path.stat().st_size == 0
    for name, size in (("thin_png", THIN), ("huge_png", HUGE)):  # small, valid, millions of pixels
        assert Image.open(files[name].path).size == size and files[name].path.stat().st_size < 60_000, name
    assert files["svg_as_png"].path.read_bytes().startswith(b"<?xml")


# ---------------------------------------------------------------------------------------------
# Load


def test_burst_overflows_the_queue_with_a_clear_message_and_the_app_recovers(url, client, monkeypatch, tmp_path):
    """8 users x 3 calls at once into a queue of 2 (renders slowed by 0.2 s, as a real model's): every
    call is answered, with images or "Queue is full! Please try again.", none fails, none hangs;
    a call right after succeeds. The full version: python -m bench.load --users 50 --calls 20."""
    from bench.load import report, run_load
    from p2p_demo.service import ModelManager

    render_ = ModelManager._render

    def slow_render(self, *args, **kwargs):
        time.sleep(0.2)
        return render_(self, *args, **kwargs)

    monkeypatch.setattr(ModelManager, "_render", slow_render)
    result = run_load(url, users=8, calls=3, image=CAT, model=MODELS[0], timeout=120, download_dir=tmp_path)
    print(report(result))
    assert result.answered == 24, "some calls never returned"
    assert result.count("failed") == 0, result.failures()
    assert result.count("busy") >= 1 and result.count("ok") >= 1
    busy = next(c for c in result.calls if c.status == "busy")
    assert "Queue is full! Please try again." in busy.error
    monkeypatch.undo()
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


def test_output_images_never_change_under_a_download(tmp_path):
    """Gradio writes each output image at a path named by its hash; the same image again (the same
    edge map, the same seed) must not rewrite the file a visitor is downloading (see p2p_demo/gradio_glue.py)."""
    import os

    from gradio import processing_utils

    from p2p_demo import gradio_glue

    assert gradio_glue.atomic_output_cache()
    img = Image.fromarray(arrow())
    path = processing_utils.save_pil_to_cache(img, str(tmp_path), format="png")
    data = Path(path).read_bytes()
    with open(path, "rb") as download:
        head = download.read(100)
        assert processing_utils.save_pil_to_cache(img, str(tmp_path), format="png") == path
        assert os.fstat(download.fileno()).st_ino != os.stat(path).st_ino  # a new file took the name
        assert head + download.read() == data == Path(path).read_bytes()
    assert [p.name for p in Path(path).parent.iterdir()] == ["image.png"]  # no temp file left


# ---------------------------------------------------------------------------------------------
# Hostile input: the app's API


API_NEW = ["truncated_jpeg", "exif_rotated_jpeg", "svg_as_png", "la_png", "one_pixel_png", "inverted_png",
           "all_black_png"]  # the rest of the corpus goes through /render in test_app.py (see the top)


def test_hostile_uploads_render_right_or_are_explained(client, files, upright):
    """Each bad file gets a one-line reason and the next (good) call renders; each valid one renders
    like the upright arrow: the EXIF-rotated JPEG turned, the inverted sketch's lines found."""
    from gradio_client.exceptions import AppError

    want = render(client, upright, deterministic=True)
    assert arrow_direction(want["edges"]) == "right"
    for name in API_NEW + ["upright"]:  # bad and good alternate: each refusal is followed by a render
        case = files.get(name)
        if case is None or case.refusal is None:
            out = render(client, case.path if case else upright, deterministic=True)
            assert arrow_direction(out["edges"]) == "right", name
            assert diff(out["edges"], want["edges"]) < 1.0 and diff(out["image"], want["image"]) < 2.0, name
            continue
        with pytest.raises(AppError) as e:
            render(client, case.path)
        message = str(e.value)
        assert case.refusal in message.lower() and "\n" not in message.strip(), (name, message)


# ---------------------------------------------------------------------------------------------
# Hostile input: the command line


CLI_COVERED = {"text_as_png", "all_white_png"}  # test_cli.py: a text file named .png, a blank sketch


def test_hostile_files_on_the_command_line(weights, files, upright, tmp_path, capsys, monkeypatch):
    """Every corpus file: exit 0 and a picture like the upright arrow's, or exit 1 and one line
    "error: <file>: <what is wrong>"."""
    from p2p_demo.__main__ import main
    from p2p_demo.render import Renderer

    loaded, load = {}, Renderer.load.__func__

    def load_once(cls, spec, **kwargs):  # the model once, not once per file
        if spec not in loaded:
            loaded[spec] = load(cls, spec, **kwargs)
        return loaded[spec]

    monkeypatch.setattr(Renderer, "load", classmethod(load_once))
    model = str(weights / MODELS[0])

    def cli(path: Path, out: Path) -> tuple[int, list[str]]:
        code = main(["render", "--model", model, "--input", str(path), "--out", str(out), "--deterministic"])
        return code, capsys.readouterr().err.strip().splitlines()

    assert cli(upright, tmp_path / "upright.png") == (0, [])
    want = np.asarray(Image.open(tmp_path / "upright.png"))
    for name, case in files.items():
        if name in CLI_COVERED:
            continue
        out = tmp_path / f"{name}.out.png"
        code, err = cli(case.path, out)
        if case.refusal is None:
            assert code == 0 and err == [], (name, err)
            assert diff(np.asarray(Image.open(out)), want) < 2.0, name
        else:
            assert code == 1 and not out.exists(), name
            assert len(err) == 1 and err[0].startswith(f"error: {case.path}: "), (name, err)
            assert case.refusal in err[0].lower(), (name, err)


# ---------------------------------------------------------------------------------------------
# Faults: broken weights and an unreachable Hub, through the app's model switch


def test_broken_models_are_refused_and_the_app_keeps_its_model(url, client, weights):
    (weights / "vanishing" / "model.safetensors").unlink()  # deleted while the app is serving
    choices = [c[1] for c in next(c for c in httpx.get(f"{url}config").json()["components"]
                                  if c.get("props", {}).get("elem_id") == "model")["props"]["choices"]]
    assert NOT_INSTALLED not in choices and set(BROKEN) <= set(choices)
    for model_id, words in BROKEN.items():
        ok, (dropdown, *_), toasts = browser_event(url, "switch_model", [model_id, None])
        assert ok and dropdown == MODELS[0], (model_id, dropdown)  # the picker goes back to the current model
        assert len(toasts) == 1 and words in toasts[0] and toasts[0].endswith("Still using Tiny cats."), toasts
    assert not (weights / "code-ran.txt").exists()  # the pickle's code never ran
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


# ---------------------------------------------------------------------------------------------
# Only registry models, only uploaded files, uploads capped


OUTSIDE_REGISTRY = ["../../etc/passwd", "/etc/passwd", "weights/../app.py", "huggan/pix2pix-edge2shoes",
                    str(ROOT / "app.py")]


def test_models_outside_the_registry_are_refused(url, client, weights):
    """By the API (the id is checked against the registry) and by the picker (the choices)."""
    from gradio_client.exceptions import AppError

    for spec in OUTSIDE_REGISTRY + [str(weights / MODELS[1])]:  # a real model folder, by path
        with pytest.raises(AppError, match="unknown model"):
            render(client, CAT, model=spec)
    for spec in OUTSIDE_REGISTRY[:2]:
        ok, _, toasts = browser_event(url, "switch_model", [spec, None])
        assert not ok and len(toasts) == 1 and toasts[0].startswith(f"unknown model {spec!r}; choose one of: "), toasts


def test_the_image_argument_never_reads_a_server_path(url, client):
    """Only uploaded files are read: a path (as text, or as a file payload with or without Gradio's
    file mark) is refused, and the same way whether the file exists or not."""
    meta = {"_type": "gradio.FileData"}
    refusals = {}
    for name, payload in {"text": CAT, "marked": {"path": CAT, "meta": meta},
                          "unmarked": {"path": CAT}, "unmarked-missing": {"path": "/no/such/file.png"},
                          "unmarked-passwd": {"path": "/etc/passwd"},
                          "unmarked-relative": {"path": "../../../../etc/passwd"}}.items():
        event, message = rest_call(url, [payload, MODELS[0], 1, 0, True, "auto"])
        assert event == "error", (name, message)
        refusals[name] = message
    unmarked = {v for k, v in refusals.items() if k.startswith("unmarked")}
    assert len(unmarked) == 1 and "expected an uploaded image file" in unmarked.pop()  # no existence oracle
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


def test_uploads_over_the_cap_are_refused(url, client, tmp_path):
    from p2p_demo import gradio_glue

    cap = 20 * 2**20
    assert gradio_glue.LAUNCH_KWARGS["max_file_size"] == "20mb"
    big = tmp_path / "big.png"
    big.write_bytes(encode(arrow(), "PNG") + b"\0" * cap)
    r = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", big.read_bytes(), "image/png")}, timeout=120)
    assert r.status_code == 413 and "maximum allowed size" in r.text.lower(), (r.status_code, r.text[:200])
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client says so before sending
        render(client, big)
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


# ---------------------------------------------------------------------------------------------
# Hostile clients: no event opens a path, small files with absurd sizes, loose types


def test_no_event_opens_a_path_a_client_names(url, tmp_path):
    """Every event in the app's config, each of its inputs in turn given a path (as text, as a file
    payload without Gradio's mark, and with it), the others their defaults: an image that exists
    outside the app and a missing file get the same answer, so nothing was opened (gr.Examples'
    loader answered "unknown example" for an image, an empty error for a missing file)."""
    import base64

    outside = tmp_path / "outside.png"
    outside.write_bytes(encode(arrow(), "PNG"))
    config = httpx.get(f"{url}config").json()
    comps = {c["id"]: c for c in config["components"]}
    defaults = {i: c.get("props", {}).get("value") for i, c in comps.items()}
    defaults.update({i: 0 for i, c in comps.items() if c["type"] == "dataset"})  # the first example
    seen, calls, http = set(), 0, httpx.Client()
    for dep in config["dependencies"]:
        kind = (dep.get("api_name") or "").rstrip("_0123456789"), tuple(dep["inputs"])
        if not dep.get("backend_fn") or kind in seen:  # render_active is wired to 4 triggers
            continue
        seen.add(kind)
        slots = [k for k, cid in enumerate(dep["inputs"]) if comps[cid]["type"] != "state"]  # states: the server's
        for slot in slots:
            # Gradio refuses a marked path outside its upload folder before the event runs, whatever
            # the input: once per event is enough.
            for form in ("text", "unmarked", "marked")[: 3 if slot == slots[0] else 2]:
                answers = []
                for path in (outside, tmp_path / "missing.png"):
                    payload = {"text": str(path), "unmarked": {"path": str(path)},
                               "marked": {"path": str(path), "meta": {"_type": "gradio.FileData"}}}[form]
                    data = [payload if k == slot else defaults[c] for k, c in enumerate(dep["inputs"])]
                    ok, out, toasts = queue_call(url, dep["id"], data, http=http)
                    calls += 1
                    text = json.dumps([ok, out, toasts]).replace(str(path), "PATH").replace(path.name, "NAME")
                    assert "data:image/png;base64," + base64.b64encode(outside.read_bytes()).decode()[:40] \
                        not in text, (dep["api_name"], slot, form)
                    answers.append(text)
                assert answers[0] == answers[1], (dep["api_name"], slot, form, answers)
    assert {"load_example", "render", "render_sketch", "render_photo", "switch_model"} <= {k[0] for k in seen}
    http.close()
    assert 40 < calls < 200


def test_examples_are_picked_by_index_only(url):
    """The examples gallery sends an index into our list; anything else is refused by name."""
    from p2p_demo import canvas
    from p2p_demo.examples import example_paths

    ok, (value,), _ = browser_event(url, "load_example", [1])
    assert ok and value == canvas.encode(np.asarray(Image.open(example_paths()[1]).convert("RGB")))
    last = len(example_paths()) - 1
    for index in (-1, last + 1, "0", True, 1.0, None, str(example_paths()[0]), {"path": str(example_paths()[0])}):
        ok, out, toasts = browser_event(url, "load_example", [index])
        assert not ok and toasts == [f"unknown example {index!r}; pick one by its number, 0 to {last}"], toasts


def _upload(url: str, path: Path) -> dict:
    """A file as the browser sends it: uploaded first, then named by its place in the upload folder."""
    r = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, path.read_bytes(), "image/png")})
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def test_small_files_with_absurd_sizes_are_refused_at_once(url, client, files):
    """A 58 kB 1 x 30,000,000 PNG and a 12 kB 6300 x 6300 one took 3-7 s and up to 1 GB each to
    decode before; now the header is enough: through /render, the photo tab and the canvas."""
    import base64

    from gradio_client.exceptions import AppError

    for name in ("thin_png", "huge_png"):
        path = files[name].path
        t0 = time.perf_counter()
        with pytest.raises(AppError) as e:
            render(client, path)
        assert time.perf_counter() - t0 < 1.5, name
        message = str(e.value)
        assert "too large" in message and "resize it" in message and "\n" not in message, message
        t0 = time.perf_counter()
        ok, _, toasts = browser_event(url, "render_photo", [_upload(url, path), None, 1, 0, False, "auto"])
        assert time.perf_counter() - t0 < 1.5, name
        assert not ok and len(toasts) == 1 and "too large" in toasts[0], toasts
        value = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        t0 = time.perf_counter()
        ok, _, toasts = browser_event(url, "render_sketch", [value, None, 1, 0, False])
        assert time.perf_counter() - t0 < 1.5, name
        w, h = Image.open(path).size
        assert not ok and toasts == [f"Cannot read the drawing: the drawing is {w}x{h} pixels; the canvas is "
                                     "256x256. Clear the canvas and draw again."], toasts
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


def test_a_large_jpeg_is_decoded_at_a_fraction_of_its_size():
    """Over MAX_PIXELS, a JPEG is decoded at 1/2-1/8 size by the decoder itself (PIL's draft);
    other formats have no such shortcut and are refused."""
    from p2p_demo.image import MAX_PIXELS, ImageError, load_image

    photo = np.zeros((4200, 4200, 3), np.uint8)
    photo[:, 2100:] = 255  # a vertical edge in the middle
    rgb = load_image(encode(photo, "JPEG", quality=90))
    assert rgb.shape == (2100, 2100, 3) and rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
    assert rgb[:, :1040].max() < 30 and rgb[:, 1060:].min() > 225  # the same picture, smaller
    with pytest.raises(ImageError, match=r"4200x4200 pixels \(18 megapixels\): too large"):
        load_image(encode(photo[..., 0], "PNG", compress_level=1))


@pytest.mark.parametrize("field, value, word", [
    ("n", "3", "samples"), ("n", True, "samples"), ("n", 2.5, "samples"), ("seed", "1e3", "seed"),
    ("seed", [], "seed"), ("deterministic", "false", "deterministic"), ("deterministic", [], "deterministic"),
    ("deterministic", 5, "deterministic"), ("deterministic", 0, "deterministic"),
])
def test_options_take_json_types_only(url, field, value, word):
    """bool("false") was True, "1e3" a seed; now what the API docs say, or a clear refusal."""
    args = {"n": 1, "seed": 0, "deterministic": False, field: value}
    event, message = rest_call(url, [_upload(url, Path(CAT)), MODELS[0], args["n"], args["seed"],
                                     args["deterministic"], "auto"])
    assert event == "error" and message.startswith(word) and repr(value) in message, message


def test_gradio_refusals_say_what_was_wrong(url, client, tmp_path):
    """Where Gradio refuses a request before the app runs, the client gets Gradio's message, not
    {"error": null}."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(encode(arrow(), "PNG"))
    marked = {"path": str(outside), "meta": {"_type": "gradio.FileData"}}
    for data, words in [([marked, MODELS[0], 1, 0, True, "auto"], "not uploaded by a user"),
                        ([str(outside), MODELS[0], 1, 0, True, "auto"], "Input should be a valid dictionary"),
                        ([None], "didn't receive enough input values (needed: 6, got: 1)")]:
        event, message = rest_call(url, data)
        assert event == "error" and message and words in message, (data, message)
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


# ---------------------------------------------------------------------------------------------
# Training: SIGKILL at random moments, a full disk


def _fit_child(cfg: dict, cut_second_save: Path | None = None) -> str:
    """Code for a child process: train with ``cfg``; optionally die slowly inside the 2nd checkpoint
    write of this session, having written half of it (``cut_second_save`` appears then)."""
    code = ["from train.config import TrainConfig", "from train import fit"]
    if cut_second_save is not None:
        code += ["import io, time, torch",
                 "real, saves = torch.save, []",
                 "def save(obj, f, *a, **k):",
                 "    saves.append(1)",
                 "    if len(saves) < 2: return real(obj, f, *a, **k)",
                 "    buf = io.BytesIO(); real(obj, buf, *a, **k)",
                 "    f.write(buf.getvalue()[: buf.tell() // 2]); f.flush()",
                 f"    open({str(cut_second_save)!r}, 'w').close()",
                 "    time.sleep(600)",
                 "torch.save = save"]
    code.append(f"fit.fit(TrainConfig.from_dict({cfg!r}))")
    return "\n".join(code)


def _logged_step(run: Path) -> int:
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
        return max((json.loads(ln)["step"] for ln in lines if ln.strip().endswith("}")), default=0)
    except (OSError, ValueError):
        return 0


def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
    """A run killed 3 times (at random steps, and once halfway through writing a checkpoint) and
    resumed each time ends exactly as an uninterrupted run; after every kill last.pt loads and holds
    the last checkpoint (never half a file)."""
    from train.resume import load_checkpoint

    data = make_dataset(tmp_path / "data", n_train=8, n_test=2)
    base = dict(data=str(data), out_dir=str(tmp_path / "runs"), ngf=8, ndf=8, batch_size=2, n_epochs=2.0,
                n_epochs_decay=2.0, max_steps=16, checkpoint_every=2, sample_every=0, log_every=1,
                final_eval=False, progress=False, device="cpu", workers=1)
    # Children fork from a server that has imported torch once (a fresh interpreter per run would
    # import it five times; torch._dynamo is what Adam imports, pytest what a child's start imports);
    # Process.kill() is a SIGKILL.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "train.fit", "train.config", "pytest"])
    rng = random.Random(7)

    def start(cfg: dict, cut: Path | None = None):
        p = ctx.Process(target=exec, args=(_fit_child(cfg, cut), {}), daemon=True)
        p.start()
        return p

    def until(cond, p, what: str, limit: float = 120) -> None:
        deadline = time.time() + limit
        while not cond():
            assert p.exitcode is None, f"the run ended ({p.exitcode}) before {what}"
            assert time.time() < deadline, f"no {what} within {limit} s"
            time.sleep(0.01)

    ref = start({**base, "name": "reference"})
    ref.join(300)
    assert ref.exitcode == 0

    run = tmp_path / "runs" / "killed"
    ckpt = run / "checkpoints" / "last.pt"
    saved = 0  # the step of the last complete checkpoint
    for kill in range(3):
        cfg = {**base, "name": "killed", "resume": ckpt.exists()}
        if kill == 1:  # halfway through writing a checkpoint
            cut = tmp_path / f"cut{kill}"
            p = start(cfg, cut)
            until(cut.exists, p, "checkpoint write")
        else:  # at a random step past the last checkpoint
            target = max(saved, _logged_step(run)) + rng.randint(1, 3)  # the log may run ahead of last.pt
            p = start(cfg)
            until(lambda: _logged_step(run) >= target, p, f"step {target}")
            time.sleep(rng.uniform(0, 0.05))
        p.kill()
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        step = load_checkpoint(ckpt)["step"] if ckpt.exists() else 0  # whole, whenever the kill came
        assert step % base["checkpoint_every"] == 0 and step >= saved
        if kill == 1:  # the session's 1st checkpoint is there, its 2nd was cut: a temp file, never last.pt
            assert step == saved + base["checkpoint_every"]
            assert any(f.name.startswith(".last.pt.tmp-") for f in ckpt.parent.iterdir())
        saved = step
        assert saved < base["max_steps"]
    last = start({**base, "name": "killed", "resume": True})
    last.join(300)
    assert last.exitcode == 0
    a = load_checkpoint(tmp_path / "runs" / "reference" / "checkpoints" / "last.pt")
    b = load_checkpoint(ckpt)
    assert a["step"] == b["step"] == base["max_steps"]
    for net in ("G", "D"):
        for k, v in a[net].items():
            torch.testing.assert_close(b[net][k], v, rtol=0, atol=1e-6, msg=f"{net}.{k}")
    assert [h["G_L1"] for h in a["history"]] == pytest.approx([h["G_L1"] for h in b["history"]], abs=1e-6)
    assert [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines()] == list(range(1, 17))


def test_full_disk_during_fit_is_one_clear_line_and_the_checkpoint_survives(tmp_path, monkeypatch):
    """python -m train fit: the 2nd checkpoint hits ENOSPC -> exit with one line; the 1st is intact."""
    from train import fit as fit_mod
    from train import fit_args
    from train.resume import load_checkpoint

    data = make_dataset(tmp_path / "data", n_train=4, n_test=1)
    real, saves = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) < 2:
            return real(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fit_mod.torch, "save", full_disk)
    with pytest.raises(SystemExit) as e:
        fit_args.main(["--data", str(data), "--out-dir", str(tmp_path), "--name", "r", "--ngf", "8", "--ndf", "8",
                      "--batch-size", "2", "--max-steps", "4", "--checkpoint-every", "2", "--sample-every", "0",
                      "--no-final-eval", "--no-progress", "--device", "cpu"])
    message = str(e.value)
    assert message.startswith("fit: could not write checkpoint") and "No space left on device" in message
    assert "previous checkpoint there is untouched" in message and "\n" not in message
    monkeypatch.undo()
    ckpt = tmp_path / "r" / "checkpoints"
    assert load_checkpoint(ckpt / "last.pt")["step"] == 2
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]
