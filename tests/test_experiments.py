"""The experiment scripts, run at tiny size on real (bundled) data."""

import json
import os
import re

from experiments import compare_families, efficient_inference, profile_grad


def test_compare_families_trains_within_the_budget_and_writes_the_table(tmp_path):
    out = tmp_path / "results"
    compare_families.main(
        [
            "--data=digits",
            "--only=resnet",
            "--budget_s=2",
            f"--out={out}",
            f"--workdir={tmp_path / 'runs'}",
        ]
    )
    row = json.loads((out / "families.json").read_text())["resnet"]
    assert row["model"] == "resnet20" and row["params"] == 269_722
    assert 0.0 < row["epochs"] < 5 and 0.0 <= row["accuracy"] <= 1.0
    assert row["train_images_per_sec"] > 0 and 0.03 < row["gmacs_32"] < 0.045
    table = (out / "families.md").read_text()
    assert "| resnet | resnet20 | 269,722 |" in table
    assert "--config=configs/resnet.py:model=resnet20,dataset=digits" in table
    # A rerun keeps measured families instead of training them again.
    before = (out / "families.json").read_text()
    compare_families.main(["--data=digits", "--only=resnet", f"--out={out}"])
    assert (out / "families.json").read_text() == before


def test_eval_subset_links_n_test_images_per_class_and_the_whole_train_split(tmp_path):
    for split, count in (("train", 5), ("test", 4)):
        for name in ("cat", "dog"):
            os.makedirs(tmp_path / "data" / split / name)
            for i in range(count):
                (tmp_path / "data" / split / name / f"{i}.png").write_bytes(b"")
    dataset = compare_families.eval_subset(f"folder:{tmp_path / 'data'}", 2)
    root = dataset[len("folder:") :]
    assert root == str(tmp_path / "data") + "-eval2"
    assert sorted(os.listdir(os.path.join(root, "test", "cat"))) == ["0.png", "1.png"]
    assert len(os.listdir(os.path.join(root, "train", "dog"))) == 5
    assert compare_families.eval_subset(f"folder:{tmp_path / 'data'}", 2) == dataset
    assert compare_families.eval_subset("digits", 2) == "digits"


def test_efficient_inference_measures_and_tabulates(tmp_path):
    efficient_inference.main(
        ["--pattern=shufflenet_v2_x0_5", "--batch_size=1", "--steps=1", f"--out={tmp_path}"]
    )
    row = json.loads((tmp_path / "efficient_inference.json").read_text())["shufflenet_v2_x0_5"]
    assert row["params"] == 1_366_792 and row["input_size"] == 224
    assert row["images_per_sec"] > 0 and 0.03 < row["gmacs"] < 0.06
    assert (
        "| shufflenet_v2_x0_5 | 224 | 1,366,792 |"
        in (tmp_path / "efficient_inference.md").read_text()
    )


def test_profile_grad_lists_the_slowest_operations(tmp_path, capsys):
    profile_grad.main(
        ["--model=resnet8", "--batch_size=2", "--image_size=16", "--steps=1", "--top=5"]
        + [f"--out={tmp_path}"]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("resnet8, batch 2, 16 px: forward + backward")
    rows = [line.split() for line in lines[1:] if re.fullmatch(r" *\d+\.\d  \S+", line)]
    assert 1 <= len(rows) <= 5
    times = [float(ms) for ms, _ in rows]
    assert times == sorted(times, reverse=True)
    hlo = (tmp_path / "grad_hlo.txt").read_text()
    assert hlo.startswith("HloModule") and all(f"%{name} = " in hlo for _, name in rows)
