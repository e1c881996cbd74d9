"""Images, masks, list files and prediction maps read as the user sees them, or refused naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkd.data import DataConfig, build_dataset, check_data
from segkd.data.binary import BinarySegDataset, list_binary_samples
from segkd.data.checks import DataSummary
from segkd.data.readers import DataError, read_binary_mask, read_image
from segkd.metrics import evaluate_folders
from segkd.metrics.folder import FolderError

from engine_helpers import tiny_binary_config

EXIF_ORIENTATION_TAG = 0x0112


def _square(value: int = 255, size: int = 16, dtype=np.uint8) -> np.ndarray:
    mask = np.zeros((size, size), dtype)
    mask[4:12, 4:10] = value  # 48 foreground pixels
    return mask


def _binary_set(root: Path, names=("a", "b")) -> DataConfig:
    (root / "Image").mkdir(parents=True)
    (root / "Mask").mkdir()
    for name in names:
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / "Image" / f"{name}.png")
        Image.fromarray(_square()).save(root / "Mask" / f"{name}.png")
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    return DataConfig(layout="binary", root=root, train_size=16, test_size=16, multiscale_sizes=[])


def _summary_lines(cfg: DataConfig) -> tuple[list[str], list[str]]:
    summary = DataSummary()
    problems = check_data(cfg, "binary", summary=summary)
    return problems, summary.lines("binary")


# ---------------------------------------------------------------- 16-bit images


def test_16bit_photo_is_scaled_not_read_as_white(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    levels = np.tile(np.arange(0, 256, 16, dtype=np.uint16), (16, 1))  # 0..240 across each row
    Image.fromarray(levels * 257).save(cfg.root / "Image" / "a.png")  # the same levels in 16 bits
    assert Image.open(cfg.root / "Image" / "a.png").mode == "I;16"
    image = read_image(cfg.root / "Image" / "a.png")
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
    assert (image == levels[..., None]).all()  # was 255 (white) wherever the level was above 0
    item = BinarySegDataset(cfg.root, "train")[0]
    assert item["image"][0, 0].tolist() == levels[0].tolist()
    problems, lines = _summary_lines(cfg)
    assert problems == []
    assert any(line.startswith("note: 1 16-bit file(s) are read scaled") and "a.png" in line for line in lines)


def test_photo_without_a_known_range_is_refused_naming_it(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    (cfg.root / "Image" / "a.png").unlink()
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(cfg.root / "Image" / "a.tif")
    with pytest.raises(DataError, match=r"a\.tif: floating-point image \(mode F\) has no known value range"):
        read_image(cfg.root / "Image" / "a.tif")
    problems, _ = _summary_lines(cfg)
    assert any("a.tif: floating-point image" in line for line in problems)


def test_16bit_mask_is_read_by_its_range(tmp_path):
    for name, values in (("wide", _square(65535, dtype=np.uint16)), ("narrow", _square(255, dtype=np.uint16)),
                         ("zero_one", _square(1, dtype=np.uint16))):
        Image.fromarray(values).save(tmp_path / f"{name}.png")
        assert read_binary_mask(tmp_path / f"{name}.png").sum() == 48, name
    soft = _square(65535, dtype=np.uint16)
    soft[:, :2] = 300  # 0.5 % of the range: background, not (as clipped to 8 bits) foreground
    Image.fromarray(soft).save(tmp_path / "soft.png")
    assert read_binary_mask(tmp_path / "soft.png").sum() == 48


def test_0_1_palette_mask_is_read_by_its_indices(tmp_path):
    from segkd.data.classes import voc_palette

    mask = Image.fromarray(_square(1)).convert("P")
    mask.putpalette(voc_palette())  # index 1 is dark red: grey level 38, below the 128 threshold
    mask.save(tmp_path / "m.png")
    assert read_binary_mask(tmp_path / "m.png").sum() == 48  # was 0


# ---------------------------------------------------------------- masks in the alpha channel


def _rgba(colour: np.ndarray, alpha: np.ndarray) -> Image.Image:
    return Image.fromarray(np.dstack([colour, colour, colour, alpha]).astype(np.uint8), "RGBA")


@pytest.mark.parametrize("colour", [0, 255])
def test_mask_drawn_in_alpha_is_read_from_alpha(tmp_path, colour):
    _rgba(np.full((16, 16), colour), _square()).save(tmp_path / "m.png")
    assert read_binary_mask(tmp_path / "m.png").tolist() == (_square() // 255).tolist()  # was all 0 or all 1


def test_opaque_rgba_mask_and_agreeing_colour_and_alpha_use_the_colour(tmp_path):
    _rgba(_square(), np.full((16, 16), 255)).save(tmp_path / "opaque.png")
    _rgba(_square(), _square()).save(tmp_path / "both.png")  # white object, transparent black around it
    for name in ("opaque", "both"):
        assert read_binary_mask(tmp_path / f"{name}.png").sum() == 48, name


def test_mask_whose_colour_and_alpha_disagree_is_refused_and_reported(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    alpha = np.full((16, 16), 255)
    alpha[:, :3] = 0
    _rgba(_square(), alpha).save(cfg.root / "Mask" / "b.png")
    with pytest.raises(DataError, match=r"b\.png: mask has colours and transparency \(alpha\) that mark different"):
        read_binary_mask(cfg.root / "Mask" / "b.png")
    problems, _ = _summary_lines(cfg)
    assert len(problems) == 1 and "Mask/b.png: mask has colours and transparency" in problems[0]


def test_check_data_notes_masks_read_from_alpha(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    _rgba(np.zeros((16, 16)), _square()).save(cfg.root / "Mask" / "a.png")
    problems, lines = _summary_lines(cfg)
    assert problems == []
    assert lines[0] == "train: 2 image(s); masks 2 0/255"
    assert any(line.startswith("note: 1 mask(s) of one colour are read from their transparency") for line in lines)
    assert build_dataset(cfg, "binary", "val")[0]["mask"].sum().item() == 48


# ---------------------------------------------------------------- EXIF orientation


def _rotated_jpeg(path: Path, orientation: int = 6) -> None:
    """A JPEG stored 16×24 (H×W), top half bright, whose EXIF says: show it rotated 90° (24×16)."""
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:8] = 250
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(stored).save(path, exif=exif, quality=95)


def test_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    _rotated_jpeg(tmp_path / "p.jpg")
    image = read_image(tmp_path / "p.jpg")
    assert image.shape == (24, 16, 3)  # was 16×24, as stored
    # orientation 6: viewers turn the photo 90° clockwise, so the stored top is on the right
    assert image[:, -4:].mean() > 200 and image[:, :4].mean() < 50


def test_training_pairs_a_rotated_photo_with_its_upright_mask(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    (cfg.root / "Image" / "a.png").unlink()
    _rotated_jpeg(cfg.root / "Image" / "a.jpg")
    upright_mask = np.zeros((24, 16), np.uint8)
    upright_mask[:, 8:] = 255  # the bright half, as the photo is seen
    Image.fromarray(upright_mask).save(cfg.root / "Mask" / "a.png")
    item = BinarySegDataset(cfg.root, "train")[0]  # was: mask size 24×16 differs from image 16×24
    assert tuple(item["image"].shape) == (3, 24, 16)
    bright = item["image"].mean(0) > 128
    assert torch.equal(bright, item["mask"][0].bool())
    problems, lines = _summary_lines(cfg)
    assert problems == []
    assert any(line.startswith("note: 1 file(s) carry an EXIF orientation") and "a.jpg" in line for line in lines)


def test_mask_fitting_the_stored_pixels_names_the_exif_orientation(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    (cfg.root / "Image" / "a.png").unlink()
    _rotated_jpeg(cfg.root / "Image" / "a.jpg")
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(cfg.root / "Mask" / "a.png")  # fits the stored 16×24
    problems, _ = _summary_lines(cfg)
    assert len(problems) == 1
    assert "a.png: mask size 16×24 differs from image" in problems[0]
    assert "EXIF orientation 6 (rotated 90° clockwise) turns its stored 16×24 pixels" in problems[0]
    assert "the mask fits the stored pixels" in problems[0]
    with pytest.raises(DataError, match="EXIF orientation 6"):
        BinarySegDataset(cfg.root, "train")[0]


def test_predictions_are_saved_upright(tmp_path, monkeypatch):
    from segkd.engine import run
    from segkd.engine.builders import build_student

    cfg = tiny_binary_config(tmp_path)
    model = build_student(cfg).eval()
    monkeypatch.setattr(run, "load_trained", lambda *args, **kwargs: (cfg, model, torch.device("cpu")))
    (tmp_path / "photos").mkdir()
    _rotated_jpeg(tmp_path / "photos" / "p.jpg")
    [written] = run.predict_images("unused.pt", tmp_path / "photos", tmp_path / "pred")
    assert np.array(Image.open(written)).shape == (24, 16)  # was 16×24, the stored orientation


# ---------------------------------------------------------------- one name, two files


@pytest.mark.parametrize("folder", ["Image", "Mask"])
def test_two_files_for_one_name_are_refused_naming_both(tmp_path, folder):
    cfg = _binary_set(tmp_path / "set")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(cfg.root / folder / "a.jpg")
    listing = list_binary_samples(cfg.root, "train")
    role = folder.lower()
    assert listing.problems == [f"{cfg.root / folder / 'a'}.*: {role} name 'a' is ambiguous: a.jpg and a.png; keep one"]
    assert [sample.name for sample in listing.samples] == ["b"]
    with pytest.raises(DataError, match="ambiguous: a.jpg and a.png"):
        BinarySegDataset(cfg.root, "train")  # was: a.jpg chosen without a word
    problems, _ = _summary_lines(cfg)
    assert problems == listing.problems  # train and test list the same names: reported once


# ---------------------------------------------------------------- list files


def test_list_file_with_a_byte_order_mark_is_read_right(tmp_path):
    cfg = _binary_set(tmp_path / "set")
    (cfg.root / "train.txt").write_text("a\nb\n", encoding="utf-8-sig")  # as Notepad saves "UTF-8 with BOM"
    assert (cfg.root / "train.txt").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert [s.name for s in BinarySegDataset(cfg.root, "train").samples] == ["a", "b"]  # was: no image for '\ufeffa'
    assert check_data(cfg, "binary") == []


def test_semantic_list_file_with_a_byte_order_mark_is_read_right(tmp_path):
    root = tmp_path / "sem"
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "img" / "x.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(root / "lbl" / "x.png")
    (root / "train.txt").write_text("img/x.png lbl/x.png\n", encoding="utf-8-sig")
    cfg = DataConfig(layout="semseg_list", root=root, num_classes=2, train_split="train.txt", val_split="train.txt")
    assert check_data(cfg, "semantic") == []


# ---------------------------------------------------------------- eval --pred: one scale per map


def _pred_and_gt(tmp_path: Path) -> tuple[np.ndarray, Path]:
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(_square()).save(gt / "x.png")
    rng = np.random.default_rng(0)
    pred = (rng.random((16, 16)) * 120).astype(np.uint8) + _square(120)  # soft, 0..239
    return pred, gt


@pytest.mark.parametrize("workers", [1, 2])
def test_a_map_scores_the_same_saved_as_8_or_16_bit_or_float(tmp_path, workers):
    pred, gt = _pred_and_gt(tmp_path)
    saved = {"8bit": (pred, ".png"), "16bit": (pred.astype(np.uint16) * 257, ".png"),
             "float": (pred.astype(np.float32) / 255, ".tif")}
    scores = {}
    for kind, (values, suffix) in saved.items():
        (tmp_path / kind).mkdir()
        Image.fromarray(values).save(tmp_path / kind / f"x{suffix}")
        scores[kind] = evaluate_folders(tmp_path / kind, gt, workers=workers)["metrics"]
    assert Image.open(tmp_path / "16bit" / "x.png").mode == "I;16"
    assert scores["16bit"] == scores["8bit"]  # the 16-bit map was clipped to 255 almost everywhere
    assert scores["float"] == scores["8bit"]


def test_maps_without_a_known_scale_are_refused_naming_the_file(tmp_path):
    pred, gt = _pred_and_gt(tmp_path)
    (tmp_path / "f").mkdir()
    Image.fromarray(pred.astype(np.float32)).save(tmp_path / "f" / "x.tif")  # 0..239 as floats
    with pytest.raises(FolderError, match=r"f/x\.tif: floating-point prediction holds values in \[0, \d+\]"):
        evaluate_folders(tmp_path / "f", gt, workers=1)
    (tmp_path / "i").mkdir()
    Image.fromarray(pred.astype(np.int32)).save(tmp_path / "i" / "x.tif")
    with pytest.raises(FolderError, match=r"i/x\.tif: 32-bit integer prediction \(mode I\)"):
        evaluate_folders(tmp_path / "i", gt, workers=1)


def test_folder_masks_follow_the_data_mask_rules(tmp_path):
    pred, gt = _pred_and_gt(tmp_path)
    (tmp_path / "pred").mkdir()
    Image.fromarray(pred).save(tmp_path / "pred" / "x.png")
    plain = evaluate_folders(tmp_path / "pred", gt, workers=1)["metrics"]
    _rgba(np.zeros((16, 16)), _square()).save(gt / "x.png")  # the same mask drawn in alpha
    assert evaluate_folders(tmp_path / "pred", gt, workers=1)["metrics"] == plain


# ---------------------------------------------------------------- one list of image suffixes


def test_one_list_of_image_suffixes(tmp_path):
    from segkd.data.readers import IMAGE_SUFFIXES
    from segkd.engine import run
    from segkd.metrics import folder

    assert run.IMAGE_SUFFIXES is IMAGE_SUFFIXES and folder.IMAGE_SUFFIXES is IMAGE_SUFFIXES
    cfg = _binary_set(tmp_path / "set")
    (cfg.root / "Image" / "a.png").rename(cfg.root / "Image" / "a.tif")  # predict and eval took .tif; training did not
    assert [s.image.name for s in list_binary_samples(cfg.root, "train").samples] == ["a.tif", "b.png"]
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "photos" / "p.webp")
    assert [p.name for p in run.list_images(tmp_path / "photos")] == ["p.webp"]
