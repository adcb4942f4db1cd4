"""Any model on any data (README, Evaluating any model): every model source of configs/model reports the clean
accuracy of the model evaluated directly in PyTorch and runs an attack end to end; one model loaded five ways gives
one report; folder and tensor data give one report; ``evaluate_model`` is ``evaluate.py``; bad inputs are one line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import robustlab
from robustlab.cli import robustlab_cause
from robustlab.data import MNIST5k
from robustlab.errors import RobustlabError
from robustlab.evaluate import evaluate
from robustlab.models.sources import robustbench_model, robustbench_registry
from tests.helpers import make_cfg, run_cli
from tests.test_cli import _assert_one_line_error

N = 60
ATTACKS = ["attack=[fgsm,pgd_linf]", "attack.pgd_linf.steps=5", "progress=false", "logger=none"]
SKIP = {
    "seconds",
    "CC",
    "fit_seconds",
    "world_size",
    "timings",
    "run",
    "model_source",
    "checkpoint",
    "model",
    "robustbench",
}


class SmallNet(nn.Module):
    """A third-party-style network (no robustlab base class): conv-relu-pool-linear, 10 classes."""

    def __init__(self, width: int = 4, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(16 * width, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def numbers(report: dict) -> dict:
    def strip(node):
        return {k: strip(v) for k, v in node.items() if k not in SKIP} if isinstance(node, dict) else node

    return strip(report)


def assert_close(one, two, path="report", rel=0.0, abs_=0.0):
    if isinstance(one, dict):
        assert one.keys() == two.keys(), path
        for key in one:
            assert_close(one[key], two[key], f"{path}.{key}", rel, abs_)
    elif isinstance(one, float) and not math.isnan(one):
        assert two == pytest.approx(one, rel=max(rel, 1e-9), abs=max(abs_, 1e-12)), path
    elif isinstance(one, list) and one and isinstance(one[0], float):
        assert two == pytest.approx(one, rel=max(rel, 1e-9), abs=max(abs_, 1e-12)), path
    else:
        assert one == two or (one != one and two != two), path


def run(tmp_path, name, overrides):
    chosen = any(o.startswith("attack=") for o in overrides)
    return evaluate(make_cfg("eval", tmp_path / name, [*(ATTACKS[2:] if chosen else ATTACKS), *overrides]))


def direct_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).sum().item() / len(y)


@pytest.fixture(scope="module")
def mnist_test():
    data = MNIST5k(test_size=N)
    data.setup("test")
    x, y = zip(*[data.test_set[i][:2] for i in range(N)])
    return torch.stack(x), torch.tensor(y)


@pytest.fixture(scope="module")
def exported(pgd_at_run, tmp_path_factory):
    """The PGD-AT run's MNIST CNN as a robustlab checkpoint, a state dict (nested, DataParallel prefixes), a
    safetensors file, a TorchScript archive and an ONNX graph."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("exported")
    ckpt = pgd_at_run[0]["checkpoint"]
    model = robustlab.load_model(ckpt)
    torch.save(model.state_dict(), root / "plain.pt")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, root / "nested.pt"
    )
    save_file(model.state_dict(), root / "w.safetensors")
    torch.jit.trace(model, torch.rand(2, 1, 28, 28)).save(root / "m.ts")
    torch.onnx.export(
        model, torch.rand(2, 1, 28, 28), root / "m.onnx", input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    return model, ckpt, root


def test_one_model_five_ways_gives_one_report(exported, mnist_test, tmp_path):
    model, ckpt, root = exported
    data = ["data=mnist5k", f"data.test_size={N}"]
    reports = {
        "checkpoint": run(tmp_path, "ckpt", [f"ckpt={ckpt}", f"data.test_size={N}"]),
        "state dict": run(tmp_path, "sd", ["model=mnist_cnn", f"weights={root / 'plain.pt'}", *data]),
        "nested state dict": run(tmp_path, "nested", ["model=mnist_cnn", f"weights={root / 'nested.pt'}", *data]),
        "safetensors": run(tmp_path, "st", ["model=mnist_cnn", f"weights={root / 'w.safetensors'}", *data]),
        "torchscript": run(tmp_path, "ts", ["model=torchscript", f"model.path={root / 'm.ts'}", *data]),
        "onnx": run(tmp_path, "onnx", ["model=onnx", f"model.path={root / 'm.onnx'}", *data]),
    }
    direct = direct_accuracy(model, *mnist_test)
    reference = numbers(reports["checkpoint"]) | {"defense_name": None}
    for name, report in reports.items():
        assert report["clean"]["CA"] == pytest.approx(direct, abs=1e-9), name
        assert report["clean"]["n_samples"] == N and report["attacks"]["pgd_linf"]["n_samples"] == N, name
        if name == "onnx":  # float32 rounding of another graph: logits close, decisions equal but for a tie
            assert_close(reference, numbers(report) | {"defense_name": None}, name, rel=1e-4, abs_=2 / N)
        else:
            assert_close(reference, numbers(report) | {"defense_name": None}, name)
    sources = {name: r["model_source"] for name, r in reports.items()}
    assert sources["onnx"]["source"] == "onnx" and len(sources["onnx"]["path_sha256"]) == 64
    assert sources["state dict"]["weights_sha256"] != sources["safetensors"]["weights_sha256"]
    assert reports["checkpoint"]["robustbench"]["clean_acc"] == f"{100 * direct:.2f}"


def test_custom_class_with_kwargs(tmp_path, mnist_test):
    torch.manual_seed(0)
    net = SmallNet(width=6)
    torch.save({"model": net.state_dict()}, tmp_path / "small.pt")
    report = run(
        tmp_path, "custom",
        ["model=custom", "model.target=tests.test_sources.SmallNet", "+model.kwargs={width: 6}",
         f"weights={tmp_path / 'small.pt'}", "data=mnist5k", f"data.test_size={N}"],
    )  # fmt: skip
    assert report["clean"]["CA"] == pytest.approx(direct_accuracy(net, *mnist_test), abs=1e-9)
    assert report["model_source"]["source"] == "custom" and report["attacks"]["pgd_linf"]["n_samples"] == N
    assert report["model"] == "tests.test_sources.SmallNet"


def _cifar_like(tmp_path, n=16):
    torch.manual_seed(1)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8)  # NHWC uint8, as numpy users keep images
    y = torch.randint(0, 10, (n,))
    np.savez(tmp_path / "cifar_like.npz", x=x.numpy(), y=y.numpy())
    return x.permute(0, 3, 1, 2).float() / 255, y, ["data=tensors", f"data.path={tmp_path / 'cifar_like.npz'}"]


def test_timm_and_torchvision_by_name(tmp_path, mnist_test):
    import timm
    import torchvision

    from robustlab.models.normalize import Normalize

    fast = ["attack=[fgsm]", "data.family=cifar"]
    x, y, data = _cifar_like(tmp_path)
    torch.manual_seed(0)
    tv = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    torch.save(tv.state_dict(), tmp_path / "tv.pt")
    report = run(
        tmp_path, "tv", ["model=torchvision", "model.name=resnet18", f"weights={tmp_path / 'tv.pt'}", *data, *fast]
    )
    reference = nn.Sequential(Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), tv)
    assert report["clean"]["CA"] == pytest.approx(direct_accuracy(reference, x, y), abs=1e-9)
    assert report["attacks"]["fgsm"]["n_samples"] == len(y)

    net = timm.create_model("resnet18", num_classes=10, in_chans=1)
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    report = run(
        tmp_path, "timm", ["model=timm", "model.name=resnet18", f"weights={tmp_path / 'timm.pt'}", "data=mnist5k",
                           "data.test_size=20", "attack=[fgsm]"],
    )  # fmt: skip
    reference = nn.Sequential(Normalize((0.485,), (0.229,)), net)
    assert report["clean"]["CA"] == pytest.approx(direct_accuracy(reference, *(t[:20] for t in mnist_test)), abs=1e-9)
    assert report["model_source"]["source"] == "timm" and report["model_source"]["name"] == "resnet18"
    assert report["model"] == "robustlab.models.sources.timm_model"


@pytest.fixture(scope="module")
def robustbench_dir(tmp_path_factory):
    """A RobustBench model directory in RobustBench's layout, holding random weights of a registry entry."""
    registry = robustbench_registry()  # before importing from robustbench (see robustbench_registry)
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    root = tmp_path_factory.mktemp("robustbench_models")
    entry = registry[BenchmarkDataset("cifar10")][ThreatModel("Linf")]["Wong2020Fast"]
    torch.manual_seed(0)
    net = entry["model"]()
    (root / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, root / "cifar10/Linf/Wong2020Fast.pt"
    )
    return root, net


def test_robustbench_model_from_its_directory(robustbench_dir, tmp_path):
    root, net = robustbench_dir
    x, y, data = _cifar_like(tmp_path)
    rb = ["model=robustbench", "model.name=Wong2020Fast", f"model.model_dir={root}", "model.download=false"]
    report = run(tmp_path, "rb", [*rb, *data, "data.family=cifar", "attack=[fgsm]"])
    assert report["clean"]["CA"] == pytest.approx(direct_accuracy(net, x, y), abs=1e-9)
    assert report["model_source"]["source"] == "robustbench" and report["model_source"]["path_sha256"]
    entry = report["robustbench"]
    assert entry["dataset"] == "cifar10" and entry["threat_model"] == "Linf" and entry["eps"] == "8/255"
    assert entry["clean_acc"] == f"{100 * report['clean']['CA']:.2f}" and entry["n_examples"] == len(y)
    assert entry["autoattack_acc"] is None and "did not run" in entry["autoattack_note"]
    report = run(tmp_path, "rb_aa", [*rb, *data, "data.family=cifar", "attack=[autoattack]"])
    robust = report["attacks"]["autoattack"]["robust_accuracy"]
    assert (
        report["robustbench"]["autoattack_acc"] == f"{100 * robust:.2f}"
        and "autoattack_note" not in report["robustbench"]
    )


def test_robustbench_entry_names_why_autoattack_does_not_count():
    from types import SimpleNamespace

    from robustlab.leaderboard import AUTOATTACK, robustbench_entry

    data = SimpleNamespace(family="cifar", threat={}, name="cifar10")
    report = {"clean": {"CA": 0.5, "n_samples": 10}, "attacks": {"aa": {"robust_accuracy": 0.25}}}
    entry = lambda **params: robustbench_entry(  # noqa: E731
        report | {"attack_params": {"aa": {"_target_": AUTOATTACK, **params}}},
        data,
        {"source": "onnx", "path": "m.onnx"},
    )
    assert entry(version="standard", norm="linf", eps=8 / 255)["autoattack_acc"] == "25.00"
    assert entry(version="standard", norm="l2", eps=0.5)["threat_model"] == "L2"
    assert (
        "not RobustBench's cifar10 linf budget" in entry(version="standard", norm="linf", eps=0.01)["autoattack_note"]
    )
    assert "version=rand" in entry(version="rand", norm="linf", eps=8 / 255)["autoattack_note"]
    assert entry(version="standard", norm="linf", eps=8 / 255)["name"] == "m"


@pytest.mark.parametrize("kind", ["html", "truncated", "missing"])
def test_robustbench_bad_files_are_one_line(kind, robustbench_dir, tmp_path):
    good = robustbench_dir[0] / "cifar10/Linf/Wong2020Fast.pt"
    (tmp_path / "cifar10/Linf").mkdir(parents=True)
    path = tmp_path / "cifar10/Linf/Wong2020Fast.pt"
    if kind == "html":
        path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    rb = ["model=robustbench", "model.name=Wong2020Fast", f"model.model_dir={tmp_path}", "model.download=false"]
    expected = {"html": "is an HTML page", "truncated": "is truncated", "missing": "RobustBench weights not found"}
    _one_line(lambda: run(tmp_path, "run", [*rb, "data=cifar10", "attack=[fgsm]"]), expected[kind])
    if kind == "html":
        result = run_cli("evaluate.py", *rb, "data=cifar10", "logger=none", f"hydra.run.dir={tmp_path / 'cli'}")
        _assert_one_line_error(result, expected[kind])


def _write_folder(root, x, y, names=None):
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / (names[label] if names else str(int(label)))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy(), mode="L").save(folder / f"{i:04d}.png")


def test_folder_and_tensors_give_one_report(exported, mnist_test, tmp_path):
    _, ckpt, _ = exported
    x, y = mnist_test
    _write_folder(tmp_path / "digits", x, y)
    order = sorted(range(N), key=lambda i: (str(int(y[i])), f"{i:04d}"))  # the folder's order: class, then name
    torch.save({"x": (x[order] * 255).round().byte(), "y": y[order]}, tmp_path / "digits.pt")
    common = [f"ckpt={ckpt}", "data.family=mnist"]
    folder = run(tmp_path, "folder", [*common, "data=folder", f"data.root={tmp_path / 'digits'}", "data.image_size=28",
                                      "data.channels=1"])  # fmt: skip
    tensors = run(tmp_path, "tensors", [*common, "data=tensors", f"data.path={tmp_path / 'digits.pt'}"])
    assert folder["clean"]["n_samples"] == N
    assert_close(numbers(folder) | {"data": None}, numbers(tensors) | {"data": None})


def test_folder_class_indices(tmp_path):
    from robustlab.data import Folder

    x = torch.rand(6, 1, 28, 28)
    _write_folder(tmp_path / "some", x, [2, 2, 5, 5, 7, 7])  # three of a 10-class model's digits
    data = Folder(root=str(tmp_path / "some"), image_size=28, channels=1)
    assert sorted(set(data.images.targets)) == [2, 5, 7] and data.num_classes == 8 and not data.exact_classes
    _write_folder(tmp_path / "named", x, [0, 0, 1, 1, 2, 2], names=["cat", "ant", "bee"])
    assert Folder(root=str(tmp_path / "named"), image_size=28, channels=1).images.class_to_idx == {
        "ant": 0, "bee": 1, "cat": 2,
    }  # fmt: skip
    given = Folder(root=str(tmp_path / "named"), image_size=28, channels=1, classes=["cat", "ant", "bee"])
    assert given.images.class_to_idx == {"cat": 0, "ant": 1, "bee": 2}
    image, label = given.load("test")[0]
    assert image.shape == (1, 28, 28) and 0 <= image.min() and image.max() <= 1


def test_imagenet_folder_and_robustbench_subset(tmp_path):
    from robustlab.data import ImageNet
    from robustlab.data.external import _robustbench_file

    listed = _robustbench_file("imagenet_test_image_ids.txt").read_text().split()[:2]
    index = json.loads(_robustbench_file("imagenet_class_to_id_map.json").read_text())
    for name in listed:
        (tmp_path / "val" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "val" / name)
    data = ImageNet(root=str(tmp_path))
    labels = sorted(index[name.split("/")[0]] for name in listed)
    image, label = data.load("test")[1]
    assert image.shape == (3, 224, 224) and label == labels[1] and data.num_classes == 1000 and data.exact_classes
    assert ImageNet(root=str(tmp_path), preprocessing="BicubicRes256Crop224").load("test")[0][0].shape == (3, 224, 224)
    assert ImageNet(root=str(tmp_path), preprocessing="Crop288").load("test")[0][0].shape == (3, 288, 288)
    _one_line(lambda: ImageNet(root=str(tmp_path), preprocessing="Res999"), "data.preprocessing=Res999 is unknown")
    from robustlab.models.sources import robustbench_preprocessing

    assert robustbench_preprocessing("Wong2020Fast", "Linf", "imagenet") == "Crop288"  # the registry's, per model
    assert robustbench_preprocessing("Salman2020Do_R18", "Linf", "imagenet") == "Res256Crop224"
    with pytest.raises(RobustlabError, match="lacks 4998 of the 5000 listed images"):
        ImageNet(root=str(tmp_path), subset="robustbench")


def test_evaluate_model_is_evaluate_py(exported, mnist_test, tmp_path):
    model, ckpt, _ = exported
    x, y = mnist_test
    cli = run(tmp_path, "cli", [f"ckpt={ckpt}", f"data.test_size={N}", "metric=[acac,aldp]"])
    api = robustlab.evaluate_model(
        model, x, y, attacks=["fgsm", "pgd"], metrics=["acac", "aldp"], batch_size=250,
        overrides=["attack.pgd_linf.steps=5", "progress=false"], output_dir=tmp_path / "api",
    )  # fmt: skip
    assert json.loads((tmp_path / "api" / "report.json").read_text()) == json.loads(json.dumps(api))
    assert_close(
        numbers(cli) | {"data": None, "defense_name": None}, numbers(api) | {"data": None, "defense_name": None}
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=250)
    from_loader = robustlab.evaluate_model(
        model, loader, attacks=["fgsm", "pgd"], metrics=["acac", "aldp"], overrides=["attack.pgd_linf.steps=5"]
    )
    assert_close(numbers(api) | {"data": None}, numbers(from_loader) | {"data": None})
    l2 = robustlab.evaluate_model(
        model, x[:20], y[:20], attacks=["pgd"], norm="l2", eps=1.0, overrides=["progress=false"]
    )
    assert l2["attack_params"]["pgd_l2"]["eps"] == 1.0 and l2["attack_params"]["pgd_l2"]["step"] == 0.25


def _one_line(fn, *fragments):
    """``fn()`` raises a one-line :class:`RobustlabError` (bare, or wrapped by OmegaConf as the CLI unwraps it)."""
    with pytest.raises(Exception) as err:
        fn()
    message = str(robustlab_cause(err.value))
    assert "\n" not in message and "; fix: " in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_tensor_data_is_one_line(tmp_path):
    from robustlab.data import Tensors

    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])
    _one_line(lambda: Tensors(x=x[:, :, :, :20], y=y), "not square")
    _one_line(lambda: Tensors(x=torch.rand(4, 28), y=y), "not N images")
    _one_line(lambda: Tensors(x=x.float(), y=y), "ranges over [0", "not [0,1]")
    _one_line(lambda: Tensors(x=x, y=y.float()), "one integer class label per image")
    _one_line(lambda: Tensors(x=x, y=y[:3]), "for 4 images")
    _one_line(lambda: Tensors(x=x, y=torch.tensor([0, 1, 2, 12]), num_classes=10), "labels in [0, 12]")
    _one_line(lambda: Tensors(x=x[:0], y=y[:0]), "holds no images")
    torch.save({"images": x}, tmp_path / "nolabels.pt")
    _one_line(lambda: Tensors(path=str(tmp_path / "nolabels.pt")), "not x and y")
    np.save(tmp_path / "x.npy", x.numpy())
    _one_line(lambda: Tensors(path=str(tmp_path / "x.npy")), "no labels for", "data.labels")
    np.save(tmp_path / "y.npy", y.numpy())
    assert Tensors(path=str(tmp_path / "x.npy")).num_classes == 4


def test_bad_weights_are_one_line(exported, tmp_path):
    from robustlab.models.sources import custom, load_weights

    model, _, root = exported
    net = custom("tests.test_sources.SmallNet")
    _one_line(lambda: load_weights(net, root / "plain.pt"), "does not fit SmallNet", "missing key(s) (features.0.bias")
    torch.save(
        {"features.0.weight": torch.zeros(9, 1, 3, 3)}
        | {k: v for k, v in net.net.state_dict().items() if k != "features.0.weight"},
        tmp_path / "shape.pt",
    )
    _one_line(lambda: load_weights(net, tmp_path / "shape.pt"), "size mismatch")
    torch.save({"net": nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    _one_line(lambda: load_weights(net, tmp_path / "pickled.pt"), "pickled Python objects")
    _one_line(lambda: custom("tests.test_sources.NoSuchNet"), "cannot be imported")


BAD_SOURCES = ["size", "classes", "budget", "no data", "no weights", "both", "unknown timm"]


@pytest.mark.parametrize("row", BAD_SOURCES)
def test_bad_sources_are_one_line(row, exported, tmp_path):
    """Each row in-process; the rows raised inside Hydra's instantiate also on the command line (status 2)."""
    _, ckpt, root = exported
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.save({"x": x, "y": torch.arange(8) % 3}, tmp_path / "rgb.pt")
    torch.save({"x": x[:, :1, :28, :28], "y": torch.arange(8) + 5}, tmp_path / "many.pt")
    torch.save({"x": x[:, :1, :28, :28], "y": torch.arange(8)}, tmp_path / "gray.pt")
    ts = ["model=torchscript", f"model.path={root / 'm.ts'}"]
    rows = {
        "size": ([*ts, "data=tensors", f"data.path={tmp_path / 'rgb.pt'}", "data.family=cifar"],
                 "cannot take the tensors data's 3x32x32 images"),
        "classes": ([*ts, "data=tensors", f"data.path={tmp_path / 'many.pt'}", "data.family=mnist"],
                    "the tensors data has labels up to 12, outside the model's 10 classes"),
        "budget": ([f"ckpt={ckpt}", "data=tensors", f"data.path={tmp_path / 'gray.pt'}"], "states no linf budget"),
        "no data": (ts, "no data given"),
        "no weights": (["model=mnist_cnn", "data=mnist5k"], "has no weights given"),
        "both": ([f"ckpt={ckpt}", "model=mnist_cnn", f"weights={root / 'plain.pt'}"], "both ckpt= and model="),
        "unknown timm": (["model=timm", "model.name=nosuchnet", "model.pretrained=true", "data=mnist5k"],
                         "timm has no model 'nosuchnet'"),
    }  # fmt: skip
    overrides, fragment = rows[row]
    _one_line(lambda: run(tmp_path, "run", [*overrides, "attack=[fgsm]"]), fragment)
    if row in ("size", "unknown timm"):
        result = run_cli("evaluate.py", *overrides, "attack=[fgsm]", "logger=none", f"hydra.run.dir={tmp_path / 'cli'}")
        _assert_one_line_error(result, fragment)


@pytest.mark.parametrize("payload", ["good", "html", "nothing"])
def test_robustbench_download_is_checked_before_it_is_kept(payload, robustbench_dir, tmp_path, monkeypatch):
    """The download (gdown, replaced here: tests never use the network) lands in a temporary file that is checked
    and only then renamed; an HTML page or a failed download leaves nothing behind."""
    import gdown

    good = robustbench_dir[0] / "cifar10/Linf/Wong2020Fast.pt"

    def fake_download(id, output, quiet):
        if payload == "nothing":
            return None
        Path(output).write_bytes(
            good.read_bytes() if payload == "good" else b"<html><body>Quota exceeded</body></html>"
        )
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    source = {"name": "Wong2020Fast", "threat_model": "Linf", "dataset": "cifar10", "model_dir": str(tmp_path)}
    target = tmp_path / "cifar10/Linf/Wong2020Fast.pt"
    if payload == "good":
        assert isinstance(robustbench_model(**source), nn.Module) and target.read_bytes() == good.read_bytes()
    else:
        fragment = "is an HTML page" if payload == "html" else "could not download Wong2020Fast.pt"
        _one_line(lambda: robustbench_model(**source), fragment)
        assert not target.exists() and not list(target.parent.glob("*.part"))
