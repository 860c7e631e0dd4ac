"""Labelled and unlabelled image collections behind one small protocol, and `open_dataset` to tell
the on-disk formats apart. Images are decoded on access, so opening a 50,000-image folder is cheap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

from PIL import Image

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.data.idx import find_idx_pair, mnist_dataset

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
LIST_FILE = "dataset.txt"
FORMATS_HELP = (f"a folder with {LIST_FILE}, an MNIST folder (*-images-idx3-ubyte[.gz]), "
                "a folder of class folders, or a folder of images")


class Dataset(Protocol):
    """Random access to (image, label); label is None for calibration-only sets."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Image.Image, int | None]: ...

    def source(self, index: int) -> str:
        """Where item `index` comes from, for error messages (a file name, or file + record)."""
        ...

    def fingerprint(self, index: int) -> str:
        """sha256 of what item `index` is: the bytes it is decoded from and its label (a cache key part;
        a path says nothing about an image edited in place)."""
        ...


class FileDataset:
    """Images on disk with optional integer labels: backs the folder and list formats."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int] | None, classes: list[str] | None = None):
        if labels is not None and len(labels) != len(files):
            raise ValueError("one label per file")
        self.files = list(files)
        self.labels = None if labels is None else list(labels)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int | None]:
        label = None if self.labels is None else self.labels[index]
        return read_image(self.files[index]), label

    def source(self, index: int) -> str:
        return str(self.files[index])

    def fingerprint(self, index: int) -> str:
        label = None if self.labels is None else self.labels[index]
        try:
            return f"{sha256_file(self.files[index])}:{label}"
        except OSError as exc:
            raise DeployKitError(f"cannot read image {self.files[index]}: {exc}",
                                 fix="remove or replace the file, then rerun") from exc


class Subset:
    """A fixed selection of another dataset's items, in the given order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Image.Image, int | None]:
        return self.dataset[self.indices[index]]

    def source(self, index: int) -> str:
        return self.dataset.source(self.indices[index])

    def fingerprint(self, index: int) -> str:
        return self.dataset.fingerprint(self.indices[index])


def read_image(path: Path) -> Image.Image:
    """Decode fully now, so a truncated or corrupt file fails here with its name, not later."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DeployKitError(f"cannot read image {path}: {exc}",
                             fix="remove or replace the file, then rerun") from exc


def open_dataset(path: Path) -> Dataset:
    """The dataset at `path`, its format detected from what the folder holds."""
    path = Path(path)
    if not path.exists():
        raise DeployKitError(f"dataset not found: {path}", fix="check the --data path")
    try:
        return _detect(path)
    except (OSError, UnicodeDecodeError) as exc:  # unreadable folder or list file
        raise DeployKitError(f"cannot read dataset {path}: {exc}", fix="check the path and its permissions") from exc


def _detect(path: Path) -> Dataset:
    if path.is_file():
        return _open_file(path)
    if (path / LIST_FILE).is_file():
        return image_list(path / LIST_FILE)
    idx = find_idx_pair(path)
    if idx is not None:
        return mnist_dataset(*idx)
    return _open_folder(path)


def _open_file(path: Path) -> Dataset:
    if path.suffix == ".txt":
        return image_list(path)
    if "idx3-ubyte" in path.name:
        return mnist_dataset(*find_idx_pair(path.parent, images=path))
    raise DeployKitError(f"{path} is a file, not a dataset", fix=f"point --data at {FORMATS_HELP}")


def _open_folder(path: Path) -> Dataset:
    entries = [e for e in sorted(os.scandir(path), key=lambda e: e.name) if not e.name.startswith(".")]
    if not entries:
        raise DeployKitError(f"dataset folder is empty: {path}", fix=f"point --data at {FORMATS_HELP}")
    images = [Path(e.path) for e in entries if e.is_file() and _is_image(e.name)]
    class_dirs = [Path(e.path) for e in entries if e.is_dir() and _has_images(Path(e.path))]
    if images and class_dirs:
        raise DeployKitError(f"{path} mixes loose images with class folders",
                             fix="move the loose images into a class folder, or point at one of them")
    if class_dirs:
        return image_folder(path)
    if images:
        return FileDataset(images, labels=None)
    raise DeployKitError(f"no images or recognisable dataset format in {path}", fix=_folder_hint(path, entries))


def _folder_hint(path: Path, entries: list[os.DirEntry]) -> str:
    """A folder of folders of class folders (cifar10/ holding test/ and train/) is a common slip."""
    subdirs = [e.name for e in entries if e.is_dir()]
    if subdirs:
        return f"point --data at one of its subfolders ({', '.join(subdirs[:5])}), or at {FORMATS_HELP}"
    return f"point --data at {FORMATS_HELP}"


def image_folder(root: Path) -> FileDataset:
    """One folder per class; classes sorted by name give the label indices (torchvision's rule).
    Only images directly inside a class folder count, so a parent of train/ and test/ is not read
    as a two-class dataset."""
    class_dirs = sorted((d for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    files, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(p for p in class_dir.iterdir() if p.is_file() and _is_image(p.name))
        if not members:
            raise DeployKitError(f"class folder {class_dir} holds no images",
                                 fix="remove it: an empty class would shift every later label")
        files += members
        labels += [label] * len(members)
    return FileDataset(files, labels, classes=[d.name for d in class_dirs])


def image_list(list_file: Path) -> FileDataset:
    """`<relative path>, <class>` per line (the imagenet_val1300 / Caffe list format)."""
    root = list_file.parent
    files, labels = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if line.strip():
            name, label = _parse_list_line(line, list_file, number)
            files.append(root / name)
            labels.append(label)
    if not files:
        raise DeployKitError(f"{list_file} lists no images", fix="one `<path>, <class>` per line")
    _check_files_exist(files, list_file)
    return FileDataset(files, labels)


def _parse_list_line(line: str, list_file: Path, number: int) -> tuple[str, int]:
    name, _, label = line.rpartition(",")
    try:
        return name.strip(), int(label)
    except ValueError:
        raise DeployKitError(f"{list_file}:{number}: expected `<path>, <class>`, got {line!r}",
                             fix="fix or remove that line") from None


def _check_files_exist(files: list[Path], list_file: Path) -> None:
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DeployKitError(f"{len(missing)} files listed in {list_file} do not exist, first: {missing[0]}",
                             fix="check that the images sit beside the list as it names them")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _has_images(folder: Path) -> bool:
    return any(e.is_file() and _is_image(e.name) for e in os.scandir(folder))
