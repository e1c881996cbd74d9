from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from segkd.data import VOC_CLASSES, DataConfig


def test_defaults_follow_the_synthetic_set() -> None:
    cfg = DataConfig()
    assert cfg.layout == "synthetic" and cfg.root is None
    assert cfg.num_classes == cfg.synthetic.num_classes == 4
    assert cfg.class_names == ["background", "circle", "rectangle", "triangle"]


def test_synthetic_class_count_can_be_changed_in_one_place() -> None:
    cfg = DataConfig(synthetic={"num_classes": 6})
    assert cfg.num_classes == 6 and len(cfg.class_names or []) == 6


def test_conflicting_synthetic_class_count_is_rejected() -> None:
    with pytest.raises(ValidationError, match="synthetic.num_classes"):
        DataConfig(num_classes=21)


def test_voc_names_are_the_default_for_21_classes(tmp_path: Path) -> None:
    cfg = DataConfig(layout="voc", root=tmp_path)
    assert cfg.class_names == list(VOC_CLASSES)
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[15] == "person"


def test_generic_names_for_other_class_counts(tmp_path: Path) -> None:
    cfg = DataConfig(layout="semseg_list", root=tmp_path, num_classes=3)
    assert cfg.class_names == ["class0", "class1", "class2"]


def test_unknown_key_is_rejected_and_named() -> None:
    with pytest.raises(ValidationError) as info:
        DataConfig(crop_szie=473)
    assert "crop_szie" in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


def test_unknown_nested_key_is_rejected_and_named() -> None:
    with pytest.raises(ValidationError) as info:
        DataConfig(synthetic={"num_images": 3})
    assert "synthetic.num_images" in str(info.value)


@pytest.mark.parametrize("layout", ["binary", "semseg_list", "voc"])
def test_root_is_required_for_real_layouts(layout: str) -> None:
    expected = f"root: a data folder is required for layout '{layout}'"
    with pytest.raises(ValidationError, match=expected):
        DataConfig(layout=layout)


def test_invalid_values_name_their_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        DataConfig(scale_range=(2.0, 0.5))
    assert "scale_range" in str(info.value) and "low <= high" in str(info.value)
    with pytest.raises(ValidationError) as info:
        DataConfig(layout="voc", root=tmp_path, class_names=["a", "b"])
    assert "class_names has 2 names but num_classes is 21" in str(info.value)
    with pytest.raises(ValidationError) as info:
        DataConfig(layout="bogus")
    assert "layout" in str(info.value)
    with pytest.raises(ValidationError) as info:
        DataConfig(multiscale_sizes=[224, 0])
    assert "multiscale_sizes" in str(info.value)


def test_split_names_per_task(tmp_path: Path) -> None:
    cfg = DataConfig(layout="binary", root=tmp_path)
    assert cfg.split_name("binary", "train") == "train"
    assert cfg.split_name("binary", "val") == "test"
    assert cfg.split_name("semantic", "val") == "val"
    explicit = DataConfig(layout="voc", root=tmp_path, train_split="train_aug", val_split="val2")
    assert explicit.split_name("semantic", "train") == "train_aug"
    assert explicit.split_name("semantic", "val") == "val2"


def test_normalization_defaults_per_task() -> None:
    cfg = DataConfig()
    mean, std = cfg.normalization("semantic")
    assert mean == pytest.approx((123.675, 116.28, 103.53))
    assert std == pytest.approx((58.395, 57.12, 57.375))
    assert cfg.normalization("binary") == ((124.55, 118.90, 102.94), (56.77, 55.97, 57.50))
    custom = DataConfig(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    assert custom.normalization("binary") == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))


def test_every_field_is_documented() -> None:
    undocumented = [name for name, info in DataConfig.model_fields.items() if not info.description]
    assert undocumented == []


def test_dump_round_trips() -> None:
    cfg = DataConfig(synthetic={"num_classes": 3, "seed": 5})
    again = DataConfig.model_validate(cfg.model_dump())
    assert again == cfg
