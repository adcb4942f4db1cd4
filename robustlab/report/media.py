"""The report in Weights & Biases: the figures and the gallery as ``wandb.Image``, the attack table as a
``wandb.Table`` and the HTML page uploaded as a file of the run."""

import io
from pathlib import Path

from lightning.pytorch.loggers import Logger, WandbLogger
from PIL import Image

from robustlab.report.render import Page


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _strip(images: list[bytes]) -> Image.Image:
    """Images side by side (clean, adversarial, perturbation) with a small gap."""
    tiles = [_image(data) for data in images]
    strip = Image.new(
        "RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), max(t.height for t in tiles)), "white"
    )
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 4
    return strip


def log_report(loggers: list[Logger], page: Page, directory: str | Path) -> None:
    """Log ``page``'s media to every W&B logger among ``loggers`` and upload ``directory/report.html``."""
    runs = [logger.experiment for logger in loggers if isinstance(logger, WandbLogger)]
    if not runs:
        return
    import wandb

    media: dict = {
        f"report/{key}": wandb.Image(_image(data), caption=title) for key, (title, data) in page.figures.items()
    }
    for table in page.tables():
        if table.key == "attacks":
            media["report/attack_table"] = wandb.Table(
                columns=table.columns,
                data=[[c.value if c.key else c.text for c in row] for row in table.rows],
            )
    for attack, shown in page.gallery.items():
        media[f"report/gallery/{attack}"] = [
            wandb.Image(
                _strip([e.clean, e.adversarial, e.perturbation]),
                caption=f"#{e.idx} clean | adversarial | perturbation x{e.magnified:.0f}: true {e.label}, "
                f"clean {e.clean_pred}, adversarial {e.adv_pred}",
            )
            for e in shown
        ]
    directory = Path(directory).resolve()
    for run in runs:
        run.log(media)
        for name in ("report.html", "report.md"):
            if (directory / name).is_file():
                run.save(str(directory / name), base_path=str(directory), policy="now")
