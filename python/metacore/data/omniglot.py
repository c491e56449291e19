r"""Omniglot (Lake et al. 2015) read from the archives as its authors publish them.

The archives (``images_background.zip``, ``images_evaluation.zip``,
``images_background_small1.zip``, ``images_background_small2.zip``;
github.com/brendenlake/omniglot) hold
``<archive>/<alphabet>/<character>/<drawing>.png``: 105×105 black-on-white drawings, 20 per
character. They are read zipped or unpacked, never extracted to disk.

Each image becomes ink = 1 − brightness in [0, 1], then is shrunk to ``image_size``² by *area
averaging*: output pixel (i, j) is the mean of the input over the square it covers, input pixels
cut by its border counting in proportion to the part inside,

    out = W · img · Wᵀ,   W[i, j] = |[j, j+1) ∩ [i·r, (i+1)·r)| / r,   r = 105 / image_size,

(for an integer r, the plain mean of r×r blocks). Each character is one class; with ``rotations``
its images turned by 90°, 180° and 270° (counter-clockwise) are three more classes (the protocol of
Vinyals et al. 2016 and Finn et al. 2017), named ``alphabet/character@degrees``.

Protocol "Omniglot minimal" (:func:`omniglot_minimal`): meta-train on the 5 alphabets of
``images_background_small1`` (136 characters), meta-test on the 3 alphabets of
``images_background_small2`` that small1 lacks (Japanese (katakana), Sanskrit, Tagalog: 106
characters).
"""

from __future__ import annotations

import io
import os
import pathlib
import zipfile
import zlib

import numpy as np

from .. import _validation
from .class_images import ClassImages

__all__ = ["omniglot", "omniglot_minimal", "area_weights", "MINIMAL_TRAIN", "MINIMAL_TEST"]

MINIMAL_TRAIN = "images_background_small1"
MINIMAL_TEST = "images_background_small2"


# --- resampling -----------------------------------------------------------------------------------
def area_weights(n_in, n_out):
    """(n_out, n_in) matrix W of area averaging along one axis: row i holds the share of each
    input pixel in the output pixel i (rows sum to 1)."""
    n_in = _validation.integer("n_in", n_in, minimum=1)
    n_out = _validation.integer("n_out", n_out, minimum=1)
    edges = np.arange(n_out + 1) * n_in / n_out                    # output borders, input units
    j = np.arange(n_in)
    overlap = (np.minimum(j[None, :] + 1, edges[1:, None])
               - np.maximum(j[None, :], edges[:-1, None]))
    return np.clip(overlap, 0.0, None) * (n_out / n_in)


# --- archives -------------------------------------------------------------------------------------
def _png_entries(names):
    """{(alphabet, character): [(drawing, name), ...]} from '/'-separated entry names."""
    entries = {}
    prefix = {}
    for name in names:
        parts = name.replace(os.sep, "/").split("/")
        # macOS's zip tool adds __MACOSX/ and ._name resource-fork entries: not drawings
        if "__MACOSX" in parts or any(p.startswith(".") for p in parts):
            continue
        if len(parts) >= 3 and parts[-1].lower().endswith(".png"):
            key = (parts[-3], parts[-2])
            where = "/".join(parts[:-3])
            if prefix.setdefault(key, where) != where:   # two copies would be merged
                raise ValueError(f"the character {key[0]}/{key[1]} is in two folders of one "
                                 f"archive ({prefix[key] or '.'!r} and {where or '.'!r})")
            entries.setdefault(key, []).append((parts[-1], name))
    return entries


class _Archive:
    """One Omniglot archive, a zip file or its unpacked folder: its characters and their PNGs."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        if self.path.is_dir():
            names = [str(p.relative_to(self.path)) for p in sorted(self.path.glob("*/*/*"))
                     if p.is_file()]   # .png in any case, as in a zip (_png_entries filters)
            self._read, self.close = (lambda name: (self.path / name).read_bytes()), (lambda: None)
        else:
            try:
                zf = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise ValueError(f"root: {self.path} is not a zip archive (expected an Omniglot "
                                 f"archive such as images_background.zip)") from None
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            self._read, self.close = zf.read, zf.close
        try:
            self.entries = _png_entries(names)
        except ValueError as e:
            self.close()
            raise ValueError(f"root: {self.path}: {e}") from None
        if not self.entries:
            self.close()
            raise ValueError(f"root: {self.path} is not an Omniglot archive: it holds no "
                             f"<alphabet>/<character>/<drawing>.png files")

    def alphabets(self):
        return {a for a, _ in self.entries}

    def listing(self, alphabet):
        """What an alphabet holds, to compare two archives that both have it."""
        return sorted((c, d) for (a, c), files in self.entries.items() if a == alphabet
                      for d, _ in files)

    def read(self, name):
        try:
            return self._read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            # a damaged entry (bad CRC, a broken deflate stream) in an intact directory
            raise ValueError(f"root: {self.path}:{name} is damaged ({e})") from None


def _archive_path(folder, stem):
    """The unpacked folder ``stem``, else ``stem.zip``, in ``folder`` (else FileNotFoundError)."""
    for path in (folder / stem, folder / f"{stem}.zip"):
        if path.exists():
            return path
    raise FileNotFoundError(f"root: {folder} holds neither {stem}.zip nor its unpacked folder "
                            f"{stem}/ (Omniglot archives: github.com/brendenlake/omniglot)")


def _archives(root):
    """The archives under ``root``: one zip, one unpacked archive, or a folder of those."""
    root = pathlib.Path(_validation.path("root", root))
    if not root.exists():
        raise FileNotFoundError(f"root: {root} does not exist (an Omniglot archive such as "
                                f"images_background.zip, or a folder holding them)")
    if root.is_file() or next((p for p in root.glob("*/*/*") if p.suffix.lower() == ".png"),
                              None) is not None:
        return [_Archive(root)]
    stems = sorted({p.name[:-4] if p.name.endswith(".zip") else p.name
                    for p in root.glob("images_*") if p.is_dir() or p.name.endswith(".zip")})
    if not stems:
        raise ValueError(f"root: {root} holds no Omniglot archive (images_*.zip, or an unpacked "
                         f"folder of <alphabet>/<character>/<drawing>.png)")
    archives = []
    try:
        for stem in stems:
            archives.append(_Archive(_archive_path(root, stem)))
    except Exception:
        for arc in archives:
            arc.close()
        raise
    return archives


def _decode(data, name):
    """A PNG's ink, 1 − brightness, as a float64 (h, w) array."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("mc.datasets.omniglot needs Pillow to decode PNGs: "
                          "pip install 'metacore[data]'") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float64)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        # (a bomb: more pixels than Pillow's limit, far beyond a 105 × 105 drawing)
        raise ValueError(f"{name} is not a readable PNG image: {e}") from None
    return 1.0 - grey / 255.0


# --- the reader -----------------------------------------------------------------------------------
def omniglot(root, *, alphabets=None, image_size=28, rotations=True):
    """Omniglot characters as classes of images.

    Parameters
    ----------
    root : path
        An archive (``images_background.zip``, ...), its unpacked folder, or a folder holding
        archives (all are read; an alphabet found in several must hold the same drawings).
    alphabets : None or sequence of str
        The alphabets to read, by their folder names (``"Japanese_(katakana)"``); None: all.
    image_size : int
        Side of the area-averaged images.
    rotations : bool
        Add each character's images turned by 90°, 180° and 270° as three more classes.

    Returns
    -------
    ClassImages
        ``X`` (N, image_size²) float32 ink in [0, 1], classes ordered by alphabet, character and
        rotation (class ``4·k + r`` is character k turned by r·90° with rotations), images of a
        class ordered by file name.
    """
    image_size = _validation.integer("image_size", image_size, minimum=1)
    rotations = _validation.boolean("rotations", rotations)
    archives = _archives(root)
    try:
        return _read(archives, root, alphabets, image_size, rotations)
    finally:
        for arc in archives:
            arc.close()


def _read(archives, root, alphabets, image_size, rotations):
    owner = {}                                     # alphabet -> the first archive that has it
    for arc in archives:
        for a in sorted(arc.alphabets()):
            if a not in owner:
                owner[a] = arc
            elif owner[a].listing(a) != arc.listing(a):
                raise ValueError(f"root: alphabet {a!r} differs between {owner[a].path} and "
                                 f"{arc.path}")
    if alphabets is None:
        wanted = sorted(owner)
    else:
        if isinstance(alphabets, str):
            alphabets = [alphabets]
        if not isinstance(alphabets, (list, tuple, set, frozenset)):
            raise TypeError(f"alphabets must be a folder name or a list of them, got "
                            f"{type(alphabets).__name__} {alphabets!r}")
        alphabets = list(alphabets)
        odd = [a for a in alphabets if not isinstance(a, str)]
        if odd:
            raise TypeError(f"alphabets must name alphabets by their folder names (strings), "
                            f"got {odd[0]!r}")
        wanted = sorted(set(alphabets))
        if not wanted:
            raise ValueError("alphabets must name at least one alphabet, got none")
        unknown = [a for a in wanted if a not in owner]
        if unknown:
            raise ValueError(f"alphabets: {unknown[0]!r} is not in {root} (it has "
                             f"{sorted(owner)})")

    turns = 4 if rotations else 1
    # the images' float64 blocks and the float32 pool, named before a drawing is decoded
    n_images = sum(len(owner[a].entries[key]) for a in wanted for key in owner[a].entries
                   if key[0] == a)
    _validation.fits_in_memory(f"image_size={image_size} ({n_images} drawings, {turns} "
                               f"rotation(s) each)", n_images * turns * image_size ** 2 * 24)
    blocks, labels, names, groups, weights = [], [], [], [], {}
    for a in wanted:
        arc = owner[a]
        for c in sorted(ch for (al, ch) in arc.entries if al == a):
            ink = [_decode(arc.read(name), f"{arc.path}:{name}")
                   for _, name in sorted(arc.entries[(a, c)])]
            shape = ink[0].shape
            if any(x.shape != shape for x in ink):
                raise ValueError(f"{arc.path}: the drawings of {a}/{c} differ in size")
            if shape not in weights:
                weights[shape] = (area_weights(shape[0], image_size),
                                  area_weights(shape[1], image_size))
            rows, cols = weights[shape]
            small = rows @ np.stack(ink) @ cols.T                 # (n, s, s)
            for r in range(turns):
                blocks.append(np.rot90(small, k=r, axes=(1, 2)).reshape(len(ink), -1))
                labels.append(np.full(len(ink), len(names), dtype=np.int64))
                names.append(f"{a}/{c}@{90 * r}" if rotations else f"{a}/{c}")
                groups.append(a)
    X = np.clip(np.concatenate(blocks), 0.0, 1.0).astype(np.float32)
    return ClassImages.from_checked(X, np.concatenate(labels), names, groups)   # X is new: no copy


def omniglot_minimal(root, *, image_size=28, rotations=True, test_rotations=False):
    """The protocol "Omniglot minimal": (meta-train, meta-test) ClassImages.

    ``root`` is a folder holding ``images_background_small1`` and ``images_background_small2``
    (zipped or unpacked). Meta-train: every alphabet of small1 (Balinese, Early_Aramaic, Greek,
    Korean, Latin: 136 characters, ×4 with ``rotations``). Meta-test: the alphabets of small2 that
    small1 lacks (Japanese_(katakana), Sanskrit, Tagalog: 106 characters, ×4 with
    ``test_rotations``). No character is on both sides.
    """
    folder = pathlib.Path(_validation.path("root", root))
    image_size = _validation.integer("image_size", image_size, minimum=1)   # checked before
    rotations = _validation.boolean("rotations", rotations)                 # the train archive
    test_rotations = _validation.boolean("test_rotations", test_rotations)  # is decoded
    if not folder.is_dir():
        raise FileNotFoundError(f"root: {folder} is not a folder (it should hold "
                                f"{MINIMAL_TRAIN}.zip and {MINIMAL_TEST}.zip)")
    train_path = _archive_path(folder, MINIMAL_TRAIN)
    test_path = _archive_path(folder, MINIMAL_TEST)
    train = omniglot(train_path, image_size=image_size, rotations=rotations)
    listing = _Archive(test_path)
    listing.close()
    new = sorted(listing.alphabets() - set(train.alphabets))
    if not new:
        raise ValueError(f"root: {test_path} has no alphabet that {train_path} lacks")
    test = omniglot(test_path, alphabets=new, image_size=image_size, rotations=test_rotations)
    return train, test
