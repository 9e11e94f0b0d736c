"""The experiment scripts, run at tiny size on real (bundled) data."""

import json

from experiments import compare_families


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
