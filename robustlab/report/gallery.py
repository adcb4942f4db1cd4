"""The gallery of adversarial examples: a few per attack, read from the evaluation's ``gallery.pt``
(:class:`robustlab.evaluation.gallery.Gallery`) or, for a run with ``save_adv=true``, from ``adv/<attack>.pt``."""

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from robustlab.evaluation.gallery import successes_first

GALLERY_FILE = "gallery.pt"
#: Images are shown at about this many pixels a side (small ones enlarged without smoothing).
TILE = 96


@dataclass
class Example:
    idx: int
    label: int
    clean_pred: int
    adv_pred: int
    clean_conf: float | None
    adv_conf: float | None
    success: bool
    clean: bytes
    adversarial: bytes
    perturbation: bytes
    magnified: float
    linf: float
    target: int | None = None


def image_png(x: torch.Tensor) -> bytes:
    """A ``(C, H, W)`` image in [0,1] as PNG bytes, resized to about :data:`TILE` pixels a side."""
    array = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array[..., :3])
    side = max(image.size)
    if side < TILE:
        factor = TILE // side
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    elif side > 2 * TILE:
        image.thumbnail((2 * TILE, 2 * TILE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _rows(directory: Path) -> dict[str, dict[str, torch.Tensor]]:
    path = directory / GALLERY_FILE
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    saved = sorted((directory / "adv").glob("*.pt")) if (directory / "adv").is_dir() else []
    return {p.stem: torch.load(p, map_location="cpu", weights_only=True) for p in saved}


def examples(directory: str | Path, size: int = 4) -> dict[str, list[Example]]:
    """``{attack: examples}`` of the run in ``directory``: up to ``size`` per attack, successful ones first."""
    gallery = {}
    for name, rows in _rows(Path(directory)).items():
        order = successes_first(rows["success"].bool(), size)[:size]
        gallery[name] = [_example(rows, int(i)) for i in order]
    return gallery


def _example(rows: dict[str, torch.Tensor], i: int) -> Example:
    x, x_adv = rows["x"][i], rows["x_adv"][i]
    delta = x_adv.float() - x.float()
    linf = float(delta.abs().max())
    scale = 0.5 / linf if linf > 0 else 1.0
    conf = {k: float(rows[k][i]) if k in rows else None for k in ("clean_conf", "adv_conf")}
    return Example(
        idx=int(rows["idx"][i]),
        label=int(rows["y"][i]),
        clean_pred=int(rows["clean_pred"][i]),
        adv_pred=int(rows["adv_pred"][i]),
        clean_conf=conf["clean_conf"],
        adv_conf=conf["adv_conf"],
        success=bool(rows["success"][i]),
        clean=image_png(x),
        adversarial=image_png(x_adv),
        perturbation=image_png(0.5 + delta * scale),
        magnified=scale,
        linf=linf,
        target=int(rows["target"][i]) if "target" in rows else None,
    )
