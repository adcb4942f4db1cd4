"""Which third-party architectures load through robustlab's model sources (issue 13), with random weights and
no network: every RobustBench registry entry (CIFAR-10, CIFAR-100, ImageNet), every torchvision classification
model and a list of common timm models, each built and run on one blank image of its input size.

    python bench/sources.py [robustbench] [torchvision] [timm]
"""

import sys
import time
import warnings

import torch

from robustlab.models.sources import robustbench_registry, timm_model, torchvision_model

TIMM = [
    "resnet18", "resnet50", "wide_resnet50_2", "vit_tiny_patch16_224", "vit_base_patch16_224", "deit_small_patch16_224",
    "convnext_tiny", "efficientnet_b0", "mobilenetv3_small_100", "regnety_016", "swin_tiny_patch4_window7_224",
    "densenet121", "xcit_small_12_p16_224", "dla34", "inception_v3", "beit_base_patch16_224", "levit_128",
]  # fmt: skip


def probe(make, size: int) -> str | None:
    """None when ``make()`` builds a model that maps a blank ``3 x size x size`` image to logits, else why not."""
    try:
        with torch.no_grad():
            make().eval()(torch.zeros(1, 3, size, size))
    except Exception as err:  # any failure of a foreign architecture is a row of the table
        return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:150]}"
    return None


def candidates(kind: str):
    """``(name, factory or reason it is not supported, input size)`` of every model of ``kind``."""
    if kind == "robustbench":
        registry = robustbench_registry()
        for dataset, size in (("cifar10", 32), ("cifar100", 32), ("imagenet", 224)):
            for threat, entries in registry[next(d for d in registry if d.value == dataset)].items():
                for name, entry in entries.items():
                    if isinstance(entry.get("gdrive_id"), list):
                        why = "an ensemble of several weight files"
                    elif not entry.get("gdrive_id"):
                        why = "no RobustBench weight file (timm hub or torchvision weights)"
                    else:
                        why = entry["model"]
                    yield f"{dataset}/{threat.value}/{name}", why, size
    elif kind == "torchvision":
        from torchvision import models

        for name in models.list_models(module=models):
            yield name, lambda name=name: torchvision_model(name, num_classes=10), 224
    else:
        for name in TIMM:
            yield name, lambda name=name: timm_model(name, num_classes=10), 299 if name == "inception_v3" else 224


def main() -> None:
    warnings.filterwarnings("ignore")
    for kind in sys.argv[1:] or ["robustbench", "torchvision", "timm"]:
        loaded, failed = 0, []
        for name, make, size in candidates(kind):
            start = time.perf_counter()
            why = make if isinstance(make, str) else probe(make, size)
            print(f"{name}: {why or 'ok'} ({time.perf_counter() - start:.1f} s)", flush=True)
            loaded, failed = (loaded + 1, failed) if why is None else (loaded, [*failed, (name, why)])
        print(f"\n{kind}: {loaded} load, {len(failed)} do not")
        for name, why in failed:
            print(f"  {name}: {why}")


if __name__ == "__main__":
    main()
