"""mc.datasets: Omniglot and school readers, specified on tiny archives the tests write, then
checked on the real files in shared/data when they are there.

Oracles are independent of the readers: area averaging is checked against repeating every pixel
n_out times and taking block means (exact for any ratio), episodes against the images they came
from, splits against set arithmetic on row indices.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest

import metacore as mc
from metacore.evaluation.statistics import explained_variance, task_explained_variance

try:
    from PIL import Image
except ImportError:
    Image = None
try:
    import scipy.io as scipy_io
except ImportError:
    scipy_io = None
needs_pillow = pytest.mark.skipif(Image is None, reason="the Omniglot reader needs Pillow")
needs_scipy = pytest.mark.skipif(scipy_io is None, reason="the school reader needs SciPy")

# the real files: $METACORE_DATA, else shared/data beside the checkout
DATA = pathlib.Path(os.environ.get("METACORE_DATA",
                                   pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))
SIDE = 12                                  # drawings of the tiny archives: 12×12 pixels
ALPHABETS = {"Alpha": 3, "Beta_(b)": 3}    # alphabet -> characters
DRAWERS = 4


# --- tiny archives --------------------------------------------------------------------------------
def drawing(alphabet, character, drawer):
    """A deterministic 12×12 black-on-white (0/255) drawing, distinct for every key."""
    rng = np.random.default_rng([len(alphabet), ord(alphabet[0]), character, drawer])
    return np.where(rng.random((SIDE, SIDE)) < 0.3, 0, 255).astype(np.uint8)


def png(pixels, mode="1"):
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def archive_files(stem, alphabets=ALPHABETS):
    """{entry name: PNG bytes} laid out like the authors' archives."""
    files = {}
    for a, n_chars in alphabets.items():
        for c in range(1, n_chars + 1):
            for d in range(1, DRAWERS + 1):
                name = f"{stem}/{a}/character{c:02d}/{900 + c:04d}_{d:02d}.png"
                files[name] = png(drawing(a, c, d))
    return files


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_folder(root, files):
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    return write_zip(root / "images_background.zip", archive_files("images_background"))


def area_oracle(img, n_out):
    """Exact area average: every pixel repeated n_out times per axis, then means of n_in blocks."""
    n_in = img.shape[0]
    fine = np.repeat(np.repeat(img, n_out, axis=0), n_out, axis=1)
    return fine.reshape(n_out, n_in, n_out, n_in).mean(axis=(1, 3))


# --- Omniglot: classes ----------------------------------------------------------------------------
@needs_pillow
def test_one_class_per_character_and_rotation(tiny_zip):
    ci = mc.datasets.omniglot(tiny_zip, image_size=4)
    n_chars = sum(ALPHABETS.values())
    assert ci.n_classes == 4 * n_chars
    assert ci.X.shape == (4 * n_chars * DRAWERS, 16) and ci.X.dtype == np.float32
    assert (ci.class_sizes == DRAWERS).all()
    assert ci.alphabets == ("Alpha", "Beta_(b)")
    assert ci.class_names[:5] == ("Alpha/character01@0", "Alpha/character01@90",
                                  "Alpha/character01@180", "Alpha/character01@270",
                                  "Alpha/character02@0")
    plain = mc.datasets.omniglot(tiny_zip, image_size=4, rotations=False)
    assert plain.n_classes == n_chars and plain.class_names[0] == "Alpha/character01"


@needs_pillow
def test_ink_is_one_and_pixels_are_area_means(tiny_zip):
    for size in (4, 5, 12):        # 12/4: 3×3 blocks; 12/5: pixels cut by borders; 12: identity
        ci = mc.datasets.omniglot(tiny_zip, image_size=size, rotations=False)
        for c, name in enumerate(ci.class_names):
            a, ch = name.split("/")
            ink = 1.0 - drawing(a, int(ch[-2:]), 1) / 255.0
            np.testing.assert_allclose(ci.images(c)[0], area_oracle(ink, size), atol=1e-6)
    assert ci.X.min() == 0.0 and ci.X.max() == 1.0


@needs_pillow
def test_grey_levels_keep_their_ink(tmp_path):
    grey = np.full((SIDE, SIDE), 255, np.uint8)
    grey[:6] = 51                                         # ink 0.8 in the top half
    files = {f"images_background/A/character01/{d}.png": png(grey, mode="L") for d in "ab"}
    ci = mc.datasets.omniglot(write_zip(tmp_path / "g.zip", files), image_size=2,
                              rotations=False)
    np.testing.assert_allclose(ci.images(0)[0], [[0.8, 0.8], [0.0, 0.0]], atol=1e-6)


@needs_pillow
def test_rotations_are_turned_images_of_the_same_alphabet(tiny_zip):
    ci = mc.datasets.omniglot(tiny_zip, image_size=6)
    for k in range(ci.n_classes // 4):
        base = ci.images(4 * k)
        for r in range(1, 4):
            np.testing.assert_array_equal(ci.images(4 * k + r), np.rot90(base, k=r, axes=(1, 2)))
            assert ci.class_alphabets[4 * k + r] == ci.class_alphabets[4 * k]


@needs_pillow
def test_subset_keeps_every_rotation_of_a_character_on_one_side(tiny_zip):
    ci = mc.datasets.omniglot(tiny_zip, image_size=4)
    a, b = ci.subset(["Alpha"]), ci.subset("Beta_(b)")
    assert a.n_classes + b.n_classes == ci.n_classes
    chars = [{n.split("@")[0] for n in part.class_names} for part in (a, b)]
    assert not chars[0] & chars[1]
    for part in (a, b):
        for name in part.class_names:
            stem = name.split("@")[0]
            assert sum(n.split("@")[0] == stem for n in part.class_names) == 4
    np.testing.assert_array_equal(a.X, ci.X[:a.X.shape[0]])
    direct = mc.datasets.omniglot(tiny_zip, image_size=4, alphabets=["Beta_(b)"])
    np.testing.assert_array_equal(direct.X, b.X)
    assert direct.class_names == b.class_names


@needs_pillow
def test_zip_folder_and_folder_of_archives_read_the_same(tiny_zip, tmp_path):
    want = mc.datasets.omniglot(tiny_zip, image_size=4)
    files = archive_files("images_background")
    write_folder(tmp_path / "unpacked", files)
    for root in (tmp_path / "unpacked",                        # holds images_background/
                 tmp_path / "unpacked" / "images_background",   # holds the alphabets
                 tiny_zip.parent):                              # holds images_background.zip
        got = mc.datasets.omniglot(root, image_size=4)
        np.testing.assert_array_equal(got.X, want.X)
        assert got.class_names == want.class_names


# --- Omniglot: episodes ---------------------------------------------------------------------------
def source_rows(ci, ts):
    """For every row of ts, the row of ci.X it is a copy of (the tiny drawings are distinct)."""
    index = {row.tobytes(): i for i, row in enumerate(ci.X)}
    assert len(index) == ci.X.shape[0]
    return np.array([index[np.asarray(r, np.float32).tobytes()] for r in ts.X])


@needs_pillow
@pytest.mark.parametrize("n_way,k_shot,q_query", [(5, 1, 3), (3, 2, 2), (24, 1, 0)])
def test_episodes_follow_the_digits_conventions(tiny_zip, n_way, k_shot, q_query):
    ci = mc.datasets.omniglot(tiny_zip, image_size=4)
    ts = ci.episodes(7, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=3)
    per = n_way * (k_shot + q_query)
    assert ts.n_tasks == 7 and ts.dtype == np.float32
    assert (ts.task_sizes == per).all() and (ts.n_support == n_way * k_shot).all()
    src = source_rows(ci, ts)
    for i in range(ts.n_tasks):
        rows, y = src[ts.offsets[i]:ts.offsets[i + 1]], ts[i][1]
        assert len(set(rows)) == per                                   # no image twice
        classes = ci.labels[rows]
        by_label = {int(c): set(classes[y == c]) for c in range(n_way)}
        assert all(len(v) == 1 for v in by_label.values())             # one class per label
        assert len(set.union(*by_label.values())) == n_way             # distinct classes
        np.testing.assert_array_equal(ts.support(i)[1], np.repeat(np.arange(n_way), k_shot))
        np.testing.assert_array_equal(ts.query(i)[1], np.repeat(np.arange(n_way), q_query))
    again = ci.episodes(7, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=3)
    other = ci.episodes(7, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=4)
    np.testing.assert_array_equal(again.X, ts.X)
    assert not np.array_equal(other.X, ts.X)
    assert ci.episodes(2, n_way=2, k_shot=1, dtype=np.float64, q_query=1).dtype == np.float64


@needs_pillow
def test_episodes_draw_every_class(tiny_zip):
    ci = mc.datasets.omniglot(tiny_zip, image_size=4)
    ts = ci.episodes(200, n_way=2, k_shot=1, q_query=0, seed=0)
    assert set(ci.labels[source_rows(ci, ts)]) == set(range(ci.n_classes))


@needs_pillow
def test_episode_arguments_are_checked(tiny_zip):
    ci = mc.datasets.omniglot(tiny_zip, image_size=4)
    with pytest.raises(ValueError, match="n_way"):
        ci.episodes(1, n_way=25, k_shot=1)
    with pytest.raises(ValueError, match="k_shot \\+ q_query"):
        ci.episodes(1, n_way=2, k_shot=2, q_query=3)
    with pytest.raises(ValueError, match="n_way"):
        ci.episodes(1, n_way=1, k_shot=1)


# --- Omniglot: protocol and errors ----------------------------------------------------------------
@needs_pillow
def test_minimal_protocol_tests_on_the_alphabets_small1_lacks(tmp_path):
    write_zip(tmp_path / "images_background_small1.zip",
              archive_files("images_background_small1", {"Alpha": 2, "Beta_(b)": 1}))
    write_folder(tmp_path, archive_files("images_background_small2",
                                         {"Beta_(b)": 1, "Gamma": 2, "Delta": 1}))
    train, test = mc.datasets.omniglot_minimal(tmp_path, image_size=4)
    assert train.alphabets == ("Alpha", "Beta_(b)") and train.n_classes == 3 * 4
    assert test.alphabets == ("Delta", "Gamma") and test.n_classes == 3
    rotated = mc.datasets.omniglot_minimal(tmp_path, image_size=4, test_rotations=True)[1]
    assert rotated.n_classes == 12


@needs_pillow
def test_missing_or_foreign_files_are_named(tmp_path, tiny_zip):
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(FileNotFoundError, match="nowhere.zip"):
        mc.datasets.omniglot(missing)
    with pytest.raises(FileNotFoundError, match="images_background_small1"):
        mc.datasets.omniglot_minimal(tmp_path)
    foreign = write_zip(tmp_path / "other.zip", {"docs/readme.txt": b"hello"})
    with pytest.raises(ValueError, match="other.zip is not an Omniglot archive"):
        mc.datasets.omniglot(foreign)
    text = tmp_path / "plain.zip"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="plain.zip is not a zip archive"):
        mc.datasets.omniglot(text)
    broken = write_zip(tmp_path / "broken.zip", {"x/A/character01/1.png": b"no png"})
    with pytest.raises(ValueError, match="1.png is not a readable PNG"):
        mc.datasets.omniglot(broken)
    with pytest.raises(ValueError, match="'Klingon'"):
        mc.datasets.omniglot(tiny_zip, alphabets=["Klingon"])
    with pytest.raises(TypeError, match="alphabets must name alphabets .* got 1"):
        mc.datasets.omniglot(tiny_zip, alphabets=[1, "Alpha"])
    with pytest.raises(ValueError, match="image_size"):
        mc.datasets.omniglot(tiny_zip, image_size=0)


@needs_pillow
def test_archives_as_macos_zips_them_read_like_the_plain_ones(tmp_path, tiny_zip):
    files = archive_files("images_background")
    extra = {f"__MACOSX/{n.rsplit('/', 1)[0]}/._{n.rsplit('/', 1)[1]}": b"\x00\x05\x16\x07"
             for n in files}
    extra["images_background/Alpha/character01/.DS_Store"] = b"Bud1"
    mac = mc.datasets.omniglot(write_zip(tmp_path / "mac.zip", {**files, **extra}))
    plain = mc.datasets.omniglot(tiny_zip)
    np.testing.assert_array_equal(mac.X, plain.X)
    assert mac.class_names == plain.class_names
    upper = {n[:-4] + ".PNG": d for n, d in files.items()}          # same in a folder
    write_folder(tmp_path / "upper", upper)
    np.testing.assert_array_equal(mc.datasets.omniglot(tmp_path / "upper" /
                                                       "images_background").X, plain.X)


@needs_pillow
def test_damaged_or_doubled_entries_are_named(tmp_path):
    files = archive_files("images_background")
    doubled = {**files, **{f"backup/{n}": d for n, d in files.items()}}
    with pytest.raises(ValueError, match=r"doubled.zip: the character Alpha/character01 is in "
                                         r"two folders"):
        mc.datasets.omniglot(write_zip(tmp_path / "doubled.zip", doubled))
    path = write_zip(tmp_path / "crc.zip", files)
    raw = bytearray(path.read_bytes())
    first = next(iter(files.values()))
    at = bytes(raw).index(first)                      # stored, not deflated: flip a data byte
    raw[at + len(first) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"crc.zip:images_background/Alpha/character01/"
                                         r"0901_01.png is damaged"):
        mc.datasets.omniglot(path)


# --- school ---------------------------------------------------------------------------------------
SCHOOL_SIZES = (5, 8, 3, 12)


def write_school(path, sizes=SCHOOL_SIZES):
    """A .mat in the MALSAR layout: 1×T cells X (n_i, 28) and Y (n_i, 1), uint8."""
    rng = np.random.default_rng(0)
    X = np.empty((1, len(sizes)), dtype=object)
    Y = np.empty((1, len(sizes)), dtype=object)
    for i, n in enumerate(sizes):
        x = rng.integers(0, 2, size=(n, 28)).astype(np.uint8)
        x[:, -1] = 1
        X[0, i], Y[0, i] = x, rng.integers(1, 71, size=(n, 1)).astype(np.uint8)
    scipy_io.savemat(path, {"X": X, "Y": Y})
    return X[0], Y[0]


@needs_scipy
def test_school_reads_one_task_per_school_with_names(tmp_path):
    Xs, Ys = write_school(tmp_path / "school.mat")
    ts = mc.datasets.school(tmp_path / "school.mat")
    assert ts.n_tasks == len(SCHOOL_SIZES) and ts.n_features == 28 and ts.dtype == np.float64
    np.testing.assert_array_equal(ts.task_sizes, SCHOOL_SIZES)
    assert ts.names == ("school 1", "school 2", "school 3", "school 4")
    for i in range(ts.n_tasks):
        np.testing.assert_array_equal(ts[i][0], Xs[i])
        np.testing.assert_array_equal(ts[i][1], Ys[i][:, 0])
    assert mc.datasets.school(tmp_path / "school.mat", dtype=np.float32).dtype == np.float32


@needs_scipy
def test_school_splits_are_per_school_fractions(tmp_path):
    write_school(tmp_path / "school.mat")
    ts = mc.datasets.school(tmp_path / "school.mat")
    reps = list(mc.datasets.school_splits(ts, repetitions=3, seed=1))
    assert len(reps) == 3
    for train, test in reps:
        assert train.names == test.names == ts.names
        np.testing.assert_array_equal(train.task_sizes, np.round(0.75 * np.array(SCHOOL_SIZES)))
        np.testing.assert_array_equal(train.task_sizes + test.task_sizes, SCHOOL_SIZES)
        for i in range(ts.n_tasks):   # the rows are distinct: the two sides partition the school
            whole = {r.tobytes() for r in np.column_stack(ts[i])}
            a = [r.tobytes() for r in np.column_stack(train[i])]
            b = [r.tobytes() for r in np.column_stack(test[i])]
            assert len(whole) == ts.task_sizes[i]
            assert set(a) | set(b) == whole and not set(a) & set(b)
    assert not np.array_equal(reps[0][0].X, reps[1][0].X)
    same = next(mc.datasets.school_splits(tmp_path / "school.mat", repetitions=1, seed=1))
    np.testing.assert_array_equal(same[0].X, reps[0][0].X)
    half = next(mc.datasets.school_splits(ts, train_fraction=0.5))
    np.testing.assert_array_equal(half[0].task_sizes, [2, 4, 2, 6])   # round half to even, ≥ 1


@needs_scipy
def test_school_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        mc.datasets.school(tmp_path / "missing.mat")
    scipy_io.savemat(tmp_path / "other.mat", {"A": np.ones((2, 2))})
    with pytest.raises(ValueError, match="other.mat is not the school data"):
        mc.datasets.school(tmp_path / "other.mat")
    (tmp_path / "text.mat").write_text("hello")
    with pytest.raises(ValueError, match="text.mat"):
        mc.datasets.school(tmp_path / "text.mat")
    with pytest.raises(ValueError, match="train_fraction"):
        next(mc.datasets.school_splits(mc.TaskSet(np.ones((4, 1)), np.ones(4), [0, 2, 4]),
                                       train_fraction=1.0))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        mc.datasets.school(tmp_path)


@needs_scipy
def test_damaged_or_foreign_school_files_are_named(tmp_path):
    X, Y = write_school(tmp_path / "good.mat")
    whole = (tmp_path / "good.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(whole[:100])
    with pytest.raises(ValueError, match="cut.mat is not a readable MATLAB .mat file"):
        mc.datasets.school(tmp_path / "cut.mat")
    scipy_io.savemat(tmp_path / "zipped.mat", {"X": np.array([X], dtype=object),
                                               "Y": np.array([Y], dtype=object)},
                     do_compression=True)
    raw = bytearray((tmp_path / "zipped.mat").read_bytes())
    raw[len(raw) // 2] ^= 0xFF                         # inside a compressed element
    (tmp_path / "garbled.mat").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="garbled.mat is not a readable MATLAB .mat file"):
        mc.datasets.school(tmp_path / "garbled.mat")
    for bad, words in ((X[0] + 1j, "X\\{1\\} holds complex numbers"),
                       (np.array([["a", "b"]]), "X\\{1\\} holds <U1 values")):
        cells = np.array([X], dtype=object)
        cells[0, 0] = bad
        scipy_io.savemat(tmp_path / "odd.mat", {"X": cells, "Y": np.array([Y], dtype=object)})
        with pytest.raises(ValueError, match=words):
            mc.datasets.school(tmp_path / "odd.mat")
    two = np.array([Y], dtype=object)
    two[0, 0] = np.hstack([Y[0], Y[0]])
    scipy_io.savemat(tmp_path / "two.mat", {"X": np.array([X], dtype=object), "Y": two})
    with pytest.raises(ValueError, match=r"Y\{1\} has shape \(5, 2\)"):
        mc.datasets.school(tmp_path / "two.mat")


# --- task names on a TaskSet, explained variance --------------------------------------------------
def test_task_names_follow_every_derived_task_set():
    ts = mc.TaskSet(np.arange(10.0).reshape(5, 2), np.arange(5.0), [0, 2, 3, 5],
                    names=["a", "b", "c"])
    assert ts.subset([2, 0]).names == ("c", "a")
    train, test = ts.split_tasks(test_fraction=0.34, seed=0)
    assert set(train.names) | set(test.names) == {"a", "b", "c"}
    assert ts.astype(np.float32).names == ts.with_support(1).names == ("a", "b", "c")
    assert pickle.loads(pickle.dumps(ts)).names == ("a", "b", "c")
    # without names of its own a task is named by its task_id
    assert ts.with_names(None).names == ("0", "1", "2")
    assert mc.TaskSet(ts.X, ts.y, ts.offsets).names == ("0", "1", "2")
    with pytest.raises(ValueError, match="names must have one entry per task"):
        ts.with_names(["a"])
    with pytest.raises(TypeError, match="names"):
        mc.TaskSet(ts.X, ts.y, ts.offsets, names="abc")


def test_explained_variance_is_one_minus_sse_over_sst():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=20), rng.normal(size=20)
    want = 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert explained_variance(y, p) == pytest.approx(want, rel=1e-12)
    assert explained_variance(y, y) == 1.0
    assert explained_variance(y, np.full(20, y.mean())) == pytest.approx(0.0, abs=1e-12)
    per = task_explained_variance(y, p, [0, 5, 20])
    np.testing.assert_allclose(per, [explained_variance(y[:5], p[:5]),
                                     explained_variance(y[5:], p[5:])])
    with pytest.raises(ValueError, match="y_pred"):
        explained_variance(y, p[:3])
    with pytest.raises(ValueError, match="constant"):
        explained_variance(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="offsets"):
        task_explained_variance(y, p, [0, 5, 19])


# --- the real files -------------------------------------------------------------------------------
def real(*parts):
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing (the real data set is not on this machine)")
    return path


@pytest.fixture(scope="module")
def minimal():
    real("omniglot", "images_background_small1.zip")
    real("omniglot", "images_background_small2.zip")
    return mc.datasets.omniglot_minimal(DATA / "omniglot")


@needs_pillow
def test_real_omniglot_minimal_counts(minimal):
    train, test = minimal
    assert train.alphabets == ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
    assert train.n_classes == 136 * 4 and (train.class_sizes == 20).all()
    assert test.alphabets == ("Japanese_(katakana)", "Sanskrit", "Tagalog")
    assert test.n_classes == 106 and (test.class_sizes == 20).all()
    assert train.X.shape == (136 * 4 * 20, 28 * 28)
    assert 0.0 <= test.X.min() and test.X.max() <= 1.0
    assert 0.02 < test.X.mean() < 0.2                          # mostly background: ink = 1


@needs_pillow
def test_real_omniglot_pixels_are_area_means():
    path = real("omniglot", "images_background_small2.zip")
    ci = mc.datasets.omniglot(path, alphabets=["Tagalog"], image_size=35, rotations=False)
    with zipfile.ZipFile(path) as zf:
        name = sorted(n for n in zf.namelist()
                      if "/Tagalog/character01/" in n and n.endswith(".png"))[0]
        ink = 1.0 - np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L")) / 255.0
    assert ink.shape == (105, 105)
    np.testing.assert_allclose(ci.images(0)[0], ink.reshape(35, 3, 35, 3).mean(axis=(1, 3)),
                               atol=1e-6)


@needs_pillow
def test_real_omniglot_episodes(minimal):
    ts = minimal[1].episodes(4, n_way=20, k_shot=5, q_query=15)
    assert ts.n_tasks == 4 and (ts.task_sizes == 400).all() and (ts.n_support == 100).all()


@needs_scipy
def test_real_school_counts():
    ts = mc.datasets.school(real("school", "school.mat"))
    assert (ts.n_tasks, ts.n_rows, ts.n_features) == (139, 15362, 28)
    assert ts.names[0] == "school 1" and ts.names[-1] == "school 139"
    assert (ts.X[:, -1] == 1).all() and 1 <= ts.y.min() and ts.y.max() <= 70
    train, test = next(mc.datasets.school_splits(ts))
    assert train.n_rows + test.n_rows == 15362
    assert abs(train.n_rows / 15362 - 0.75) < 0.01
