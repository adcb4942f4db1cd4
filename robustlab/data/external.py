"""A user's own evaluation data: an image folder, a tensor file (or tensors in memory), ImageNet's validation
folder. Each is a test split only; images come out in [0,1] as ``channels x image_size x image_size``."""

import json
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets, transforms

from robustlab.checkpoint import safe_load
from robustlab.data.base import ImageDataModule, TensorPairs
from robustlab.errors import RobustlabError

X_KEYS, Y_KEYS = ("x", "images", "data"), ("y", "labels", "targets")


class ExternalData(ImageDataModule):
    """A test split only (no training images). ``num_classes``: the data config's, or the largest label plus
    one, which a model with more classes accepts (a set holding some classes of a 10-class model)."""

    exact_classes = True

    def __init__(self, num_classes: int | None = None, **kwargs):
        kwargs.setdefault("val_size", 0)
        super().__init__(**kwargs)
        self.declared_classes = num_classes

    def _classes(self, labels: torch.Tensor, where: str) -> None:
        if len(labels) == 0:
            raise RobustlabError(f"{where} holds no images", "point the data config at a non-empty set")
        top = int(labels.max())
        if int(labels.min()) < 0 or (self.declared_classes is not None and top >= self.declared_classes):
            raise RobustlabError(
                f"{where} has labels in [{int(labels.min())}, {top}], outside 0..{(self.declared_classes or 0) - 1}",
                "give labels 0..num_classes-1 (or set data.num_classes to the model's number of classes)",
            )
        self.exact_classes = self.declared_classes is not None
        self.num_classes = self.declared_classes or top + 1

    def load(self, split: str):
        if split == "test":
            return self.test_images()
        return TensorPairs(torch.empty(0, self.in_channels, self.image_size, self.image_size), [])

    def test_images(self):
        raise NotImplementedError


def to_images(x, y, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as float NCHW in [0,1] (from uint8 or float, NCHW, NHWC or NHW) and ``y`` as int64 labels."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or (x.shape[1] not in (1, 3) and x.shape[-1] not in (1, 3)):
        raise RobustlabError(
            f"{where}: x has shape {tuple(x.shape)}, not N images", "give x as NCHW or NHWC (1 or 3 channels) or NHW"
        )
    if x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[2] != x.shape[3]:
        raise RobustlabError(f"{where}: images are {x.shape[2]}x{x.shape[3]}, not square", "centre-crop them to square")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif x.is_floating_point():
        x = x.float()
        if len(x) and (x.min() < 0 or x.max() > 1 or not x.isfinite().all()):
            raise RobustlabError(
                f"{where}: x ranges over [{x.min().item():.4g}, {x.max().item():.4g}], not [0,1]",
                "give uint8 pixels or floats in [0,1] (divide by 255; keep normalisation inside the model)",
            )
    else:
        raise RobustlabError(f"{where}: x is {x.dtype}", "give x as uint8 (0..255) or float in [0,1]")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim != 1 or len(y) != len(x):
        raise RobustlabError(
            f"{where}: y is {y.dtype} of shape {tuple(y.shape)} for {len(x)} images",
            "give y as one integer class label per image",
        )
    return x.contiguous(), y.long()


def read_tensors(path: str, labels: str | None = None) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """``x`` and ``y`` from a ``.pt`` (``torch.save({"x": ..., "y": ...})``), a ``.npz`` or a ``.npy`` pair (``labels``:
    the labels' ``.npy``; by default ``y.npy`` next to ``x.npy``, ``labels.npy`` next to ``images.npy``)."""
    path = Path(path)
    fix = "give data.path= a .pt or .npz holding x and y, or x.npy with data.labels=y.npy"
    if not path.is_file():
        raise RobustlabError(f"tensor file not found: {path}", fix)
    if path.suffix == ".npy":
        partner = {"x": "y", "images": "labels"}.get(path.stem)
        labels = labels or (str(path.with_name(f"{partner}.npy")) if partner else None)
        if labels is None or not Path(labels).is_file():
            raise RobustlabError(f"no labels for {path} ({labels or 'none given'})", "set data.labels=PATH.npy")
        try:
            return np.load(path, allow_pickle=False), np.load(labels, allow_pickle=False)
        except ValueError as err:
            raise RobustlabError(f"{path}: {err}", "save plain arrays with numpy.save") from None
    if path.suffix == ".npz":
        try:
            pairs = dict(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as err:
            raise RobustlabError(f"{path} is not a readable .npz ({err})", fix) from None
    else:
        pairs = safe_load(path, "tensor file", fix)
    if not isinstance(pairs, dict):
        raise RobustlabError(f"{path} holds a {type(pairs).__name__}, not x and y", fix)
    x = next((pairs[k] for k in X_KEYS if k in pairs), None)
    y = next((pairs[k] for k in Y_KEYS if k in pairs), None)
    if x is None or y is None:
        raise RobustlabError(f"{path} has keys {sorted(pairs)}, not x and y", fix)
    return x, y


class Tensors(ExternalData):
    """Images and labels from ``path`` (see :func:`read_tensors`), or given in memory as ``x`` and ``y``."""

    name = "tensors"

    def __init__(self, path: str | None = None, labels: str | None = None, x=None, y=None, **kwargs):
        super().__init__(**kwargs)
        where = path or "the given tensors"
        if x is None:
            if path is None:
                raise RobustlabError("data=tensors without a file", "set data.path=F (.pt, .npz or .npy)")
            x, y = read_tensors(path, labels)
        self.x, self.y = to_images(x, y, str(where))
        self.in_channels, self.image_size = self.x.shape[1], self.x.shape[2]
        self._classes(self.y, str(where))

    def test_images(self) -> TensorPairs:
        return TensorPairs(self.x, self.y)


def folder_classes(root: Path, classes: list[str] | None) -> dict[str, int]:
    """Class indices of ``root``'s subfolders: integer names are the indices; else ``classes`` gives the order;
    else the sorted names (torchvision's ``ImageFolder``)."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise RobustlabError(f"{root} has no class subfolders", "put each class's images in a subfolder of data.root")
    if classes:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise RobustlabError(
                f"{root} has folders not in data.classes: {', '.join(unknown[:3])}", "list every folder"
            )
        return {n: list(classes).index(n) for n in names}
    if all(n.isdigit() for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(names)}


class _Folder(datasets.ImageFolder):
    """``ImageFolder`` with the class indices given, not derived."""

    def __init__(self, root: Path, class_to_idx: dict[str, int], transform):
        self.given = class_to_idx
        super().__init__(str(root), transform=transform, allow_empty=True)

    def find_classes(self, directory):
        return sorted(self.given, key=self.given.get), self.given


class Folder(ExternalData):
    """An image folder, one subfolder per class (:func:`folder_classes`); each image is resized (shorter side to
    ``resize``, by default ``image_size``), centre-cropped to ``image_size`` and converted to ``channels``."""

    name = "folder"

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        channels: int = 3,
        classes: list[str] | None = None,
        resize: int | None = None,
        files: list[str] | None = None,
        interpolation: str = "bilinear",
        **kwargs,
    ):
        super().__init__(root=root, **kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise RobustlabError(f"data.root={root} is not a directory", "give data.root= a folder of class folders")
        self.in_channels, self.image_size = channels, image_size
        colour = [transforms.Grayscale(1)] if channels == 1 else []
        mode = transforms.InterpolationMode(interpolation)
        size = [] if resize == 0 else [transforms.Resize(resize or image_size, interpolation=mode)]
        self.transform = transforms.Compose([*size, transforms.CenterCrop(image_size), *colour, transforms.ToTensor()])
        self.images = _Folder(self.root, folder_classes(self.root, classes), self.transform)
        if files is not None:
            self._keep(files)
        self._classes(torch.tensor(self.images.targets, dtype=torch.long), str(self.root))

    def _keep(self, files: list[str]) -> None:
        """Keep only ``files`` (paths relative to ``root``), in their order."""
        where = {Path(p).relative_to(self.root).as_posix(): (p, t) for p, t in self.images.samples}
        missing = [f for f in files if f not in where]
        if missing:
            raise RobustlabError(
                f"{self.root} lacks {len(missing)} of the {len(files)} listed images, first {missing[0]}",
                "point data.root at the complete folder",
            )
        self.images.samples = self.images.imgs = [where[f] for f in files]
        self.images.targets = [t for _, t in self.images.samples]

    def test_images(self):
        return self.images


def _robustbench_file(name: str) -> Path:
    from robustlab.models.sources import robustbench_spec

    return Path(list(robustbench_spec().submodule_search_locations)[0]) / "helper_files" / name


#: RobustBench's ImageNet preprocessings: (resize, interpolation), then a centre crop to the image size (224, or
#: 288 for ``Crop288``); resize 0: none; a pair: to exactly that size.
PREPROCESSINGS = {
    "Res256Crop224": (256, "bilinear", 224),
    "BicubicRes256Crop224": (256, "bicubic", 224),
    "Res224": ([224, 224], "bilinear", 224),
    "Crop288": (0, "bilinear", 288),
}


class ImageNet(Folder):
    """ImageNet's validation folder (``<root>/val/<wnid>/*.JPEG``, or ``<root>/<wnid>/...``) with the standard
    1000-class indices, preprocessed as RobustBench does (``preprocessing``, default ``Res256Crop224``: resize 256,
    centre crop 224; :data:`PREPROCESSINGS`). ``subset=robustbench`` keeps RobustBench's 5000 evaluation images,
    in its order."""

    name = "imagenet"

    def __init__(self, root: str, subset: str | None = None, preprocessing: str | None = None, **kwargs):
        preprocessing = preprocessing or "Res256Crop224"
        if preprocessing not in PREPROCESSINGS:
            raise RobustlabError(
                f"data.preprocessing={preprocessing} is unknown", f"use one of {', '.join(PREPROCESSINGS)}"
            )
        resize, interpolation, size = PREPROCESSINGS[preprocessing]
        root_path = Path(root) / "val" if (Path(root) / "val").is_dir() else Path(root)
        classes = json.loads(_robustbench_file("imagenet_class_to_id_map.json").read_text())
        files = None
        if subset == "robustbench":
            files = _robustbench_file("imagenet_test_image_ids.txt").read_text().split()
        elif subset is not None:
            raise RobustlabError(f"data.subset={subset} is unknown", "use data.subset=robustbench or null")
        kwargs.setdefault("num_classes", 1000)
        super().__init__(
            str(root_path), image_size=size, resize=resize, interpolation=interpolation,
            classes=sorted(classes, key=classes.get), files=files, **kwargs,
        )  # fmt: skip
