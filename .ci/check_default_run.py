"""Check the default `python train.py` run that the quick start just made: evaluate its
checkpoint under PGD-40 (eps 0.3) and require >= 95% clean and >= 50% robust accuracy."""

import glob
import json
import os
import subprocess
import sys

summary_path = max(glob.glob("outputs/train/*/summary.json"), key=os.path.getmtime)
ckpt = json.load(open(summary_path))["checkpoint"]
run_dir = os.path.join(os.path.dirname(summary_path), "eval_pgd40")
subprocess.run(
    [
        sys.executable,
        "evaluate.py",
        f"ckpt={ckpt}",
        "attack=[pgd_linf]",
        "logger=none",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    ],
    check=True,
)
report = json.load(open(os.path.join(run_dir, "report.json")))
clean, robust = report["clean"]["CA"], report["attacks"]["pgd_linf"]["robust_accuracy"]
print(f"default run: clean {clean:.4f}, PGD-40 robust {robust:.4f} on {report['clean']['n_samples']} test images")
sys.exit(0 if clean >= 0.95 and robust >= 0.50 and report["clean"]["n_samples"] == 1000 else 1)
