"""train.prepare on real data: OpenMoji SVG fixtures, skimage photos, idx files in the real format."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2p_demo import edges
from p2p_demo.image import resize, to_gray
from train import writer
from train.dataset import NotPrepared, load_manifest, load_prepared
from train.prepare import main
from train.sources import openmoji
from train.sources.fashion_mnist import read_idx
from train.sources.openmoji import openmoji_split
from train.writer import hash_split

FIXTURES = Path(__file__).parent / "data" / "openmoji"


@pytest.fixture(scope="module")
def openmoji_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("om") / "om-128"
    rc = main(["openmoji", "--package", str(FIXTURES), "--out", str(out), "--size", "128",
               "--stroke-width", "3", "--workers", "1"])
    assert rc == 0
    return out


# -- the held-out rule ------------------------------------------------------------------------

def test_openmoji_split_rule_on_known_stems():
    # sha1 prefixes: 1F408 dfc75a, 1F45F 284c07, 1F431 1900de, 1F44D 02da20, family 11648b
    known = {"1F408": "train", "1F45F": "train", "1F97F": "train",
             "1F431": "test", "1F44D": "test", "1F468-200D-1F469-200D-1F466": "test"}
    assert {s: openmoji_split(s) for s in known} == known
    for i in range(2000):
        stem = f"{i:X}"
        assert openmoji_split(stem) == ("test" if hashlib.sha1(stem.encode()).hexdigest()[0] in "01" else "train")
        assert hash_split(stem, 0.125) == openmoji_split(stem)  # the general rule at 1/8 is the same rule
    share = np.mean([openmoji_split(f"{i:X}") == "test" for i in range(4000)])
    assert 0.10 < share < 0.15


# -- OpenMoji ---------------------------------------------------------------------------------

def test_openmoji_splits_groups_and_annotations(openmoji_dir):
    m = load_manifest(openmoji_dir)
    train, test = load_prepared(openmoji_dir, "train"), load_prepared(openmoji_dir, "test")
    assert sorted(train["names"]) == ["1F408", "1F45F", "1F97F"]
    assert sorted(test["names"]) == ["1F431", "1F44D", "1F468-200D-1F469-200D-1F466"]
    assert m["counts"] == {"train": 3, "test": 3}
    assert m["licence"] == "CC-BY-SA-4.0" and "OpenMoji" in m["attribution"]
    assert m["splits"]["train"]["groups"] == {"animals-nature": 1, "objects": 2}
    ann = dict(zip(train["names"], train["annotations"]))
    assert ann["1F408"] == "cat" and ann["1F45F"] == "running shoe"
    assert dict(zip(test["names"], test["groups"]))["1F431"] == "animals-nature"
    assert dict(zip(train["names"], train["subgroups"]))["1F45F"] == "clothing"
    assert train["A"].shape == (3, 128, 128) and train["B"].shape == (3, 128, 128, 3)
    assert m["line_style"] == {**m["line_style"], "size": 128, "stroke_width": 3}


def test_openmoji_flags_duplicates_and_corrupt_files_are_reported(openmoji_dir):
    m = load_manifest(openmoji_dir)
    excluded = {n: reason for reason, v in m["excluded"].items() for n in v["names"]}
    assert "flags" in excluded["1F1E9-1F1EA"]
    assert "same line art" in excluded["1F44D-1F3FD"]  # skin-tone variant of 1F44D
    assert m["duplicates"] == {"1F44D-1F3FD": "1F44D"}
    assert [s["name"] for s in m["skipped"]] == ["1F600"]  # black/svg/1F600.svg is cut short
    assert "black/svg/1F600.svg does not render" in m["skipped"][0]["reason"]


def test_openmoji_A_is_the_sketch_pipeline_output_binary_and_canonical(openmoji_dir):
    data = load_prepared(openmoji_dir, "train")
    style = edges.LineStyle.from_dict(load_manifest(openmoji_dir)["line_style"])
    for name, a in zip(data["names"], data["A"]):
        assert set(np.unique(a)) == {0, 255}
        line = openmoji.render_svg((FIXTURES / "black" / "svg" / f"{name}.svg").read_bytes(), 256)
        np.testing.assert_array_equal(a, edges.normalize_sketch(line, style).image)  # what the app would draw
        # canonical stroke width: ink area / skeleton length ~ stroke_width
        from skimage.morphology import skeletonize

        ink = a == 0
        width = ink.sum() / skeletonize(ink).sum()
        assert 2.3 < width < 3.8, (name, width)


def test_openmoji_A_and_B_are_aligned(openmoji_dir):
    import cv2

    data = load_prepared(openmoji_dir, "train")
    for name, a, b in zip(data["names"], data["A"], data["B"]):
        near = cv2.dilate((a == 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        outline = to_gray(b) < 60  # the colour drawing's black outline
        assert outline.sum() > 100, name
        hit, chance = near[outline].mean(), near.mean()
        shifted = np.roll(near, (9, 9), axis=(0, 1))[outline].mean()  # misaligned on purpose
        assert hit > 0.9 and chance < 0.35 and shifted < hit - 0.3, (name, hit, chance, shifted)
        assert (b[0, :] == 255).all() and (b[:, -1] == 255).all()  # framed with a white margin


def test_line_art_key_ignores_svg_text_but_not_drawing():
    cat = (FIXTURES / "black" / "svg" / "1F408.svg").read_bytes()
    same_drawing = cat.replace(b"<svg ", b"<!-- another file --><svg ", 1).replace(b'id="line"', b'id="lines"')
    assert same_drawing != cat and openmoji.line_art_key(same_drawing) == openmoji.line_art_key(cat)
    other = (FIXTURES / "black" / "svg" / "1F431.svg").read_bytes()
    assert openmoji.line_art_key(other) != openmoji.line_art_key(cat)


def test_openmoji_group_selection(tmp_path):
    out = tmp_path / "shoes"
    assert main(["openmoji", "--package", str(FIXTURES), "--out", str(out), "--size", "64",
                 "--groups", "clothing", "--workers", "1"]) == 0
    m = load_manifest(out)
    assert m["counts"] == {"train": 2, "test": 0}
    assert load_prepared(out, "test")["A"].shape == (0, 64, 64)
    assert sorted(load_prepared(out, "train")["names"]) == ["1F45F", "1F97F"]


def test_load_prepared_errors(tmp_path, openmoji_dir):
    with pytest.raises(NotPrepared, match="not a prepared dataset"):
        load_prepared(tmp_path, "train")
    with pytest.raises(NotPrepared, match="no such folder"):
        load_prepared(tmp_path / "nope", "train")
    with pytest.raises(ValueError, match="no split 'val'"):
        load_prepared(openmoji_dir, "val")


# -- folder of photos -------------------------------------------------------------------------

def test_folder_of_photos_skips_truncated_jpeg(tmp_path):
    from skimage import data as skdata

    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    Image.fromarray(skdata.chelsea()).resize((150, 100)).save(photos / "cats" / "chelsea.jpg", quality=90)
    Image.fromarray(skdata.astronaut()).resize((128, 128)).save(photos / "astronaut.png")
    Image.fromarray(skdata.coffee()).resize((120, 80)).save(photos / "coffee.jpg", quality=90)
    good = (photos / "coffee.jpg").read_bytes()
    (photos / "broken.jpg").write_bytes(good[: len(good) // 3])
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "prepared"
    assert main(["folder", "--input", str(photos), "--out", str(out), "--size", "64", "--edges", "canny",
                 "--test-fraction", "0.5"]) == 0
    m = load_manifest(out)
    assert [s["name"] for s in m["skipped"]] == ["broken.jpg"]
    assert "truncated" in m["skipped"][0]["reason"] or "damaged" in m["skipped"][0]["reason"]
    names = {}
    for split in ("train", "test"):
        d = load_prepared(out, split)
        assert d["A"].shape[1:] == (64, 64) and d["B"].shape[1:] == (64, 64, 3)
        assert set(np.unique(d["A"])) <= {0, 255}
        names.update({n: (split, g) for n, g in zip(d["names"], d["groups"])})
    assert set(names) == {"cats/chelsea.jpg", "astronaut.png", "coffee.jpg"}
    assert all(split == hash_split(n, 0.5) for n, (split, _) in names.items())
    assert names["cats/chelsea.jpg"][1] == "cats"


# -- aligned A|B images -----------------------------------------------------------------------

def _aligned_image(h: int = 96) -> np.ndarray:
    a = np.full((h, h, 3), 255, np.uint8)
    a[20:70, 20] = a[20:70, 70] = a[20, 20:71] = a[70, 20:71] = 0  # a square outline
    b = np.full((h, h, 3), 255, np.uint8)
    b[20:71, 20:71] = (200, 30, 30)  # the same square, filled red
    return np.concatenate([a, b], axis=1)


def test_aligned_splits_A_and_B(tmp_path):
    src = tmp_path / "ab"
    (src / "train").mkdir(parents=True)
    (src / "val").mkdir()
    Image.fromarray(_aligned_image()).save(src / "train" / "1_AB.png")
    Image.fromarray(_aligned_image()).save(src / "val" / "2_AB.png")
    Image.fromarray(_aligned_image()[:, :100]).save(src / "train" / "narrow.png")  # not W = 2H
    for direction in ("AtoB", "BtoA"):
        out = tmp_path / direction
        assert main(["aligned", "--input", str(src), "--out", str(out), "--size", "64",
                     "--direction", direction]) == 0
        m = load_manifest(out)
        assert m["counts"] == {"train": 1, "test": 1}
        assert [s["name"] for s in m["skipped"]] == ["train/narrow.png"]
        d = load_prepared(out, "train")
        left, right = _aligned_image()[:, :96], _aligned_image()[:, 96:]
        a_src, b_src = (left, right) if direction == "AtoB" else (right, left)
        np.testing.assert_array_equal(d["A"][0], to_gray(resize(a_src, 64)))  # kept as is, resized
        np.testing.assert_array_equal(d["B"][0], resize(b_src, 64))


def test_aligned_canonicalize_frames_B_with_A(tmp_path):
    src = tmp_path / "ab"
    src.mkdir()
    Image.fromarray(_aligned_image()).save(src / "x.png")
    out = tmp_path / "out"
    assert main(["aligned", "--input", str(src), "--out", str(out), "--size", "64", "--canonicalize",
                 "--test-fraction", "0"]) == 0
    d = load_prepared(out, "train")
    a, b = d["A"][0], d["B"][0]
    assert set(np.unique(a)) == {0, 255}
    ink = np.argwhere(a == 0)
    red = np.argwhere((b[..., 0] > 150) & (b[..., 1] < 100))
    # the outline framed by the box is where the red square is framed by the same box
    assert np.abs(ink.min(0) - red.min(0)).max() <= 2 and np.abs(ink.max(0) - red.max(0)).max() <= 2


# -- Fashion-MNIST ----------------------------------------------------------------------------

def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(n: int, seed: int) -> np.ndarray:
    """Bright shoe-like blobs on black, as Fashion-MNIST stores its photos (negatives)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for img in out:
        cv2.ellipse(img, (14, 16), (10 + int(rng.integers(0, 3)), 5), 0, 0, 360, 200, -1)
        cv2.rectangle(img, (4, 8), (10, 16), 160, -1)
    return out


def test_fashion_mnist_idx_footwear_and_limit(tmp_path):
    fm = tmp_path / "fm"
    fm.mkdir()
    _write_idx(fm / "train-images-idx3-ubyte.gz", _fake_fashion(6, 0))
    _write_idx(fm / "train-labels-idx1-ubyte.gz", np.array([5, 7, 0, 9, 5, 1]))
    _write_idx(fm / "t10k-images-idx3-ubyte.gz", _fake_fashion(3, 1))
    _write_idx(fm / "t10k-labels-idx1-ubyte.gz", np.array([2, 9, 7]))
    assert read_idx(fm / "train-labels-idx1-ubyte.gz").tolist() == [5, 7, 0, 9, 5, 1]
    assert read_idx(fm / "train-images-idx3-ubyte.gz").shape == (6, 28, 28)
    out = tmp_path / "out"
    assert main(["fashion-mnist", "--path", str(fm), "--out", str(out), "--size", "32", "--edges", "canny",
                 "--limit", "3"]) == 0
    m = load_manifest(out)
    assert m["licence"] == "MIT" and m["channels"] == 1
    assert not (out / ".partial").exists()  # resumable work is removed once written
    train, test = load_prepared(out, "train"), load_prepared(out, "test")
    assert list(train["names"]) == ["train-00000", "train-00001", "train-00003"]  # footwear only, limit 3
    assert list(train["groups"]) == ["sandal", "sneaker", "ankle-boot"]
    assert list(test["names"]) == ["test-00001", "test-00002"]
    assert train["A"].shape == (3, 32, 32) and train["B"].shape == (3, 32, 32, 1)
    b = train["B"][0, ..., 0]
    assert b[0, 0] > 200 and b.min() < 120  # inverted back: a dark product on white paper


def test_read_idx_rejects_truncated(tmp_path):
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 10) + bytes(4))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def test_manifest_records_command(openmoji_dir):
    m = json.loads((openmoji_dir / "manifest.json").read_text())
    assert m["command"].startswith("python -m train prepare openmoji")
    assert m["source"] == "openmoji" and m["created"]


# -- resumable long runs ----------------------------------------------------------------------

CALLS: list[str] = []


def _toy_pair(job):
    CALLS.append(job[0])
    if job[0] == "bad":
        return job[0], None, None, "unreadable"
    v = int(job[0][1:])
    return job[0], np.full((4, 4), v, np.uint8), np.full((4, 4, 1), v + 1, np.uint8), None


def test_resumable_map_reuses_saved_chunks(tmp_path):
    jobs = [("x0",), ("x1",), ("bad",), ("x3",), ("x4",)]
    cache = tmp_path / "partial"
    it = writer.imap_resumable(_toy_pair, jobs, 1, "toy", cache, chunk=2)
    first = [next(it) for _ in range(3)]  # the run is stopped after 3 results
    it.close()
    assert [r[0] for r in first] == ["x0", "x1", "bad"] and sorted(p.name for p in cache.iterdir()) == ["00000.npz", "00001.npz"]
    CALLS.clear()
    again = list(writer.imap_resumable(_toy_pair, jobs, 1, "toy", cache, chunk=2))
    assert CALLS == ["x4"]  # only the chunk that was never saved is computed
    got = {name: (a, b, err) for name, a, b, err in again}
    assert set(got) == {"x0", "x1", "bad", "x3", "x4"}
    assert got["bad"] == (None, None, "unreadable")
    assert got["x3"][0].tolist() == np.full((4, 4), 3).tolist() and got["x3"][1].shape == (4, 4, 1)


# -- Fluent Emoji 3D renders ------------------------------------------------------------------

def _render(colour: tuple[int, int, int], side: int = 96) -> bytes:
    """A shaded disc on a transparent square, as the package's WebP renders are."""
    import io

    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(yy - side / 2, xx - side / 2)
    shade = np.clip(1.2 - r / side, 0, 1)[..., None]
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = (np.array(colour) * shade).astype(np.uint8)
    rgba[..., 3] = np.where(r < side * 0.35, 255, 0)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "WEBP", lossless=True)
    return buf.getvalue()


def test_fluent3d_pairs_skin_tones_split_and_names(tmp_path):
    import io
    import tarfile

    from train.sources.fluent3d import annotation, fluent3d_split

    # 1f431 (cat face) is in OpenMoji's test split, 1f408 (cat) in train; a ZWJ sequence goes with its
    # first code point; skin-tone variants are left out.
    assert (fluent3d_split("1f431"), fluent3d_split("1f408")) == ("test", "train")
    assert fluent3d_split("1f431-200d-1f4bb") == "test" and fluent3d_split("1f408-200d-2b1b") == "train"
    assert annotation("1f468-200d-1f373") == "man cooking" and annotation("0023-fe0f-20e3") == "number sign"
    assert annotation("1f3f4-e0067_e0062_e0077_e006c_e0073") == "waving black flag"
    stems = {"1f408": (230, 140, 40), "1f431": (240, 180, 60), "1f45f": (250, 200, 80), "1f45f-1f3fd": (160, 110, 60)}
    tgz = tmp_path / "fluent-emoji-3d-sample.tgz"  # not the published name: a repacked sample
    with tarfile.open(tgz, "w:gz") as tar:
        for stem, colour in stems.items():
            data = _render(colour)
            info = tarfile.TarInfo(f"package/assets/{stem}.webp")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "fluent3d"
    assert main(["fluent3d", "--package", str(tgz), "--out", str(out), "--size", "64", "--workers", "1"]) == 0
    m = load_manifest(out)
    assert m["licence"] == "MIT" and "Microsoft" in m["attribution"]
    assert m["excluded"]["skin-tone variant (the same figure as its base emoji)"]["names"] == ["1f45f-1f3fd"]
    test, train = load_prepared(out, "test"), load_prepared(out, "train")
    assert list(test["names"]) == ["1f431"] and list(train["names"]) == ["1f408", "1f45f"]
    assert list(train["annotations"]) == ["cat", "athletic shoe"]
    # A: the photo path's canonical lines around the disc; B: the render on white, framed with the same box.
    a, b = train["A"][0], train["B"][0]
    assert set(np.unique(a)) <= {0, 255} and 0.01 < (a == 0).mean() < 0.3
    assert (b[0, 0] == 255).all() and (b[32, 32] < 250).any()
    ink = np.argwhere(a == 0)
    disc = np.argwhere(b.min(axis=2) < 250)
    assert np.abs(ink.mean(0) - disc.mean(0)).max() < 2  # aligned: both centred on the same point


def test_a_given_tarball_named_like_the_published_one_must_be_it(tmp_path):
    """--package openmoji-17.0.0.tgz / lobehub-fluent-emoji-3d-1.1.0.tgz: a damaged copy is refused before
    any pair is made (a repacked archive under another name is read as it is)."""
    import io
    import tarfile

    from p2p_demo.files import npm_tarball_name
    from train.sources import fluent3d, openmoji
    from train.writer import PrepareError, npm_source

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/assets/1f431_cat.webp")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"RIFF"))
    for package, version, integrity in (("openmoji", openmoji.OPENMOJI_VERSION, openmoji.OPENMOJI_INTEGRITY),
                                        (fluent3d.FLUENT3D_PACKAGE, fluent3d.FLUENT3D_VERSION, fluent3d.FLUENT3D_INTEGRITY)):
        damaged = tmp_path / npm_tarball_name(package, version)
        damaged.write_bytes(buf.getvalue())
        with pytest.raises(PrepareError, match=f"does not match the published {package}@{version} tarball"):
            npm_source(str(damaged), package, version, integrity)
    repacked = tmp_path / "my-fluent.tgz"
    repacked.write_bytes(buf.getvalue())
    assert npm_source(str(repacked), fluent3d.FLUENT3D_PACKAGE, fluent3d.FLUENT3D_VERSION, "sha512-x") == repacked
    assert list(fluent3d.read_fluent3d_package(repacked)) == ["1f431_cat"]
