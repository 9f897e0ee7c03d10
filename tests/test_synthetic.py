"""The distilled-set file format: round trip, foreign .pt files, and corrupt input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError


def make_set(**extra):
    return SyntheticSet(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), meta={"ipc": 1, "method": "x"}, **extra)


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    original = make_set(soft_labels=torch.randn(4, 10), lr=torch.tensor(0.03))
    original.save(tmp_path / "d.safetensors")
    loaded = SyntheticSet.load(tmp_path / "d.safetensors")
    assert torch.equal(loaded.images, original.images) and torch.equal(loaded.labels, original.labels)
    assert torch.equal(loaded.soft_labels, original.soft_labels) and float(loaded.lr) == pytest.approx(0.03)
    assert loaded.meta == {"ipc": 1, "method": "x"}


def test_foreign_pt_with_images_and_labels_loads(tmp_path):
    torch.save({"images": torch.randn(2, 3, 4, 4), "labels": torch.tensor([0, 1]), "lr": 0.01}, tmp_path / "x.pt")
    loaded = SyntheticSet.load(tmp_path / "x.pt")
    assert loaded.images.shape == (2, 3, 4, 4) and float(loaded.lr) == pytest.approx(0.01)


def test_corrupt_and_foreign_files_are_user_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="not a readable safetensors"):
        SyntheticSet.load(tmp_path / "junk.safetensors")
    save_file({"images": torch.zeros(1, 1, 2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not a distillkit distilled set"):
        SyntheticSet.load(tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="no such file"):
        SyntheticSet.load(tmp_path / "missing.safetensors")


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"images": torch.zeros(1, 1, 2, 2), "labels": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        SyntheticSet.load(tmp_path / "evil.pt")


def test_nan_images_are_refused(tmp_path):
    s = make_set()
    s.images[0, 0, 0, 0] = float("nan")
    s.save(tmp_path / "nan.safetensors")
    with pytest.raises(UserError, match="NaN"):
        SyntheticSet.load(tmp_path / "nan.safetensors")
