"""Feed segkd bad inputs and faults, and print what the user sees: the rows of docs/errors.md.

    PYTHONPATH=. python docs/errors_probe.py > /tmp/rows.md

Every case runs ``segkd.cli.main`` in this process on tiny generated data (about a minute on a
CPU). A case that ends in a Python traceback is printed as TRACEBACK: that is a bug to fix.
"""
from __future__ import annotations

import contextlib
import errno
import io
import shutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from segkd.cli import main
from segkd.engine import checkpoint as checkpoint_module
from segkd.engine import trainer as trainer_module

ROOT = Path(tempfile.mkdtemp(prefix="segkd-probe-"))
ROWS: list[tuple[str, str, str, str]] = []


def grey(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def binary_set(root: Path, names=("a", "b", "c", "d"), fg: int = 255) -> Path:
    for name in names:
        grey(root / "Image" / f"{name}.png", np.full((32, 32, 3), 100 + 10 * names.index(name)))
        mask = np.zeros((32, 32))
        mask[8:24, 8:20] = fg
        grey(root / "Mask" / f"{name}.png", mask)
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def semantic_set(root: Path, label_value: int = 1) -> Path:
    for name in ("x", "y", "z", "w"):
        grey(root / "img" / f"{name}.png", np.full((32, 32, 3), 90))
        label = np.zeros((32, 32))
        label[4:20, 4:20] = label_value
        grey(root / "lbl" / f"{name}.png", label)
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("".join(f"img/{n}.png lbl/{n}.png\n" for n in "xyzw"))
    return root


def config(name: str, data_root: Path | None = None, task: str = "binary", **extra) -> Path:
    raw = {
        "task": task, "name": name, "output_dir": str(ROOT / "runs" / name),
        "data": ({"layout": "binary", "root": str(data_root)} if task == "binary" else
                 {"layout": "semseg_list", "root": str(data_root), "num_classes": 3, "crop_size": 32,
                  "base_size": 32}) | {"train_size": 32, "test_size": 32, "multiscale_sizes": [],
                                       "batch_size": 2, "num_workers": 0},
        "model": {"name": "fusion", "backbone": "resnet18", "width": 8} if task == "binary" else
                 {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
        "train": {"epochs": 1, "progress": False, "log_every": 1},
    }
    if task == "semantic":
        for key in ("train_size", "test_size", "multiscale_sizes"):
            raw["data"].pop(key)
        raw["eval"] = {"sliding": False}
    for key, value in extra.items():
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[section] = value
    path = ROOT / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def case(what: str, argv: list[str], patch: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            with patch() if patch else contextlib.nullcontext():
                code = str(main(argv))
        except SystemExit as exit_:
            code = str(exit_.code)
        except BaseException:  # noqa: BLE001 - the point is to see what escapes
            code = "TRACEBACK"
            err.write(traceback.format_exc().strip().splitlines()[-1])
    printed = [line for line in out.getvalue().splitlines() if line.strip()]
    shown = [line for line in err.getvalue().splitlines() if line.strip()]
    shown += [f"warning: {w.message}" for w in seen if issubclass(w.category, UserWarning)]
    shown += [line for line in printed if line.startswith("note:")]
    start = next((i for i, line in enumerate(printed) if "problem(s) found" in line), None)
    if start is not None:  # the problems, then any notes printed before them
        shown = printed[start:start + 5] + shown
    elif not shown:
        shown = printed[:2] + printed[-1:]
    text = " ⏎ ".join(line.strip() for line in shown[:5]).replace(str(ROOT), "…").replace("|", "\\|")
    command = "segkd " + " ".join(a.replace(str(ROOT), "…") for a in argv)
    ROWS.append((what, command, code, text[:500]))


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def run() -> None:
    data = binary_set(ROOT / "sod")
    good = config("good", data)
    s = str
    # ---- configs and --set
    case("config name that does not exist", ["train", "nosuch_config"])
    bad_yaml = ROOT / "configs" / "bad.yaml"
    bad_yaml.write_text("task: binary\nmodel: {name: fusion\n")
    case("config file that is not valid YAML", ["check-data", s(bad_yaml)])
    case("unknown key in a config file", ["check-data", s(config("typo", data, train__epohcs=2))])
    case("wrong type in a config file", ["check-data", s(config("wrongtype", data, train__epochs="many"))])
    case("--set without '='", ["check-data", s(good), "--set", "train.epochs"])
    case("--set value that is not YAML", ["check-data", s(good), "--set", "train.epochs=[1,"])
    case("--set of an unknown key", ["check-data", s(good), "--set", "train.epochz=2"])
    case("--set text that YAML reads as a boolean", ["check-data", s(good), "--set", "data.train_split=no"])
    case("misspelled model name", ["check-data", s(good), "--set", "model.name=fuson"])
    case("unknown model option", ["check-data", s(good), "--set", "model.widht=8"])
    case("unknown backbone", ["check-data", s(good), "--set", "model.backbone=resnet19"])
    case("misspelled method name", ["check-data", s(good), "--set", "distill.methods=[{name: sadd}]"])
    case("unknown method option", ["check-data", s(good), "--set", "distill.methods=[{name: sad, wieght: 1}]"])
    case("method that needs a teacher, without one",
         ["check-data", s(good), "--set", "distill.methods=[{name: logits_kd}]"])
    case("model.pretrained file missing", ["train", s(good), "--set", f"model.pretrained={ROOT / 'none.pth'}"])
    torch.save({"conv1.weight": torch.zeros(3, 3, 1, 1)}, ROOT / "w.pth")
    case("model.pretrained file that does not fit", ["train", s(good), "--set", f"model.pretrained={ROOT / 'w.pth'}"])
    teacher = {"model": {"name": "fusion", "backbone": "resnet18", "width": 8}, "checkpoint": s(ROOT / "no_teacher.pt")}
    case("teacher checkpoint missing",
         ["train", s(config("kd", data, distill={"teacher": teacher, "methods": [{"name": "logits_kd"}]}))])
    case("layout that does not suit the task", ["check-data", s(good), "--set", "data.layout=voc"])
    # ---- data
    case("data root missing", ["check-data", s(good), "--set", f"data.root={ROOT / 'nowhere'}"])
    nolist = binary_set(ROOT / "nolist")
    (nolist / "test.txt").unlink()
    case("list file missing", ["check-data", s(config("nolist", nolist))])
    empty = binary_set(ROOT / "emptylist")
    (empty / "train.txt").write_text("\n")
    case("list file empty", ["check-data", s(config("emptylist", empty))])
    broken = binary_set(ROOT / "broken")
    (broken / "Image" / "a.png").unlink()
    (broken / "Mask" / "b.png").unlink()
    grey(broken / "Mask" / "c.png", np.zeros((20, 20)))
    (broken / "Image" / "d.png").write_bytes(b"\x89PNG not really")
    case("missing image, missing mask, mask of another size, corrupt image (one data set)",
         ["check-data", s(config("broken", broken))])
    trunc = binary_set(ROOT / "trunc")
    raw = (trunc / "Image" / "a.png").read_bytes()
    (trunc / "Image" / "a.png").write_bytes(raw[: len(raw) // 2])
    case("truncated image", ["check-data", s(config("trunc", trunc))])
    case("binary masks stored as 0/1", ["check-data", s(config("zeroone", binary_set(ROOT / "zeroone", fg=1)))])
    case("semantic label values outside the classes",
         ["check-data", s(config("sem_bad", semantic_set(ROOT / "sem_bad", 7), "semantic"))])
    rgb = semantic_set(ROOT / "sem_rgb")
    Image.new("RGB", (32, 32)).save(rgb / "lbl" / "x.png")
    case("colour (RGB) label image", ["check-data", s(config("sem_rgb", rgb, "semantic"))])
    case("batch larger than the training set", ["train", s(good), "--set", "data.batch_size=64"])
    # ---- training
    case("a good run (reference)", ["train", s(good)])
    case("training again into a finished run without --resume", ["train", s(good)])
    case("--resume with other epochs and LR",
         ["train", s(good), "--resume", "--set", "train.epochs=3", "--set", "optim.lr=0.5"])
    case("--resume with only logging changed", ["train", s(good), "--resume", "--set", "train.log_every=5"])
    real = trainer_module.training_losses

    def nan(*a, **k):
        return {key: v * float("nan") for key, v in real(*a, **k).items()}

    case("loss becomes NaN", ["train", s(config("nan", data))], lambda: patched(trainer_module, "training_losses", nan))

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    case("Ctrl-C during training",
         ["train", s(config("ctrlc", data))], lambda: patched(trainer_module, "training_losses", ctrl_c))

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    case("disk full while writing a checkpoint", ["train", s(config("full", data))],
         lambda: patched(checkpoint_module, "atomic_torch_save", full))

    def read_only(cfg, path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    case("read-only output folder",
         ["train", s(config("ro", data))], lambda: patched(trainer_module, "save_config", read_only))
    # ---- evaluation of folders
    pred, gt = ROOT / "pred", ROOT / "gt"
    for name in ("a", "b"):
        grey(gt / f"{name}.png", np.pad(np.full((8, 8), 255), 4))
    grey(pred / "a.png", np.pad(np.full((8, 8), 200), 4))
    case("eval --pred without --gt", ["eval", "--pred", s(pred)])
    case("eval --pred folder missing", ["eval", "--pred", s(ROOT / "nopred"), "--gt", s(gt)])
    case("masks without a prediction", ["eval", "--pred", s(pred), "--gt", s(gt)])
    grey(pred / "b.png", np.zeros((4, 4)))
    grey(pred / "extra.png", np.zeros((16, 16)))
    case("binary prediction of another size; a prediction without mask", ["eval", "--pred", s(pred), "--gt", s(gt)])
    (ROOT / "names.txt").write_text("a\n")
    case("--list: score only listed names", ["eval", "--pred", s(pred), "--gt", s(gt), "--list", s(ROOT / "names.txt")])
    grey(pred / "a.jpg", np.zeros((16, 16)))
    case("two predictions with one name", ["eval", "--pred", s(pred), "--gt", s(gt)])
    (pred / "a.jpg").unlink()
    case("semantic prediction of another size", ["eval", "--pred", s(pred), "--gt", s(gt), "--num-classes", "256"])
    spred, sgt = ROOT / "spred", ROOT / "sgt"
    grey(sgt / "s.png", np.zeros((8, 8)))
    grey(spred / "s.png", np.full((8, 8), 9))
    case("semantic predictions with values outside the classes",
         ["eval", "--pred", s(spred), "--gt", s(sgt), "--num-classes", "3"])
    Image.new("RGB", (8, 8)).save(spred / "s.png")
    case("colour image as a semantic prediction", ["eval", "--pred", s(spred), "--gt", s(sgt), "--num-classes", "3"])
    case("eval --pred together with --checkpoint", ["eval", "--pred", s(pred), "--gt", s(gt), "--checkpoint", "x.pt"])
    # ---- checkpoints
    last = ROOT / "runs" / "good" / "last.pt"
    case("eval --checkpoint of a missing file", ["eval", "--checkpoint", s(ROOT / "nosuch.pt")])
    (ROOT / "junk.pt").write_text("not a checkpoint")
    case("checkpoint that is not a PyTorch file", ["eval", "--checkpoint", s(ROOT / "junk.pt")])
    case("checkpoint of another model (--config)",
         ["eval", "--checkpoint", s(last), "--config", s(config("sem", semantic_set(ROOT / "sem"), "semantic"))])
    torch.save(torch.load(last, weights_only=False)["model"], ROOT / "plain.pt")
    case("plain state dict without --config", ["eval", "--checkpoint", s(ROOT / "plain.pt")])
    # ---- predict, benchmark, export
    case("predict --input missing",
         ["predict", "--checkpoint", s(last), "--input", s(ROOT / "nophotos"), "--output", s(ROOT / "p")])
    photos = ROOT / "photos"
    grey(photos / "ok.png", np.full((20, 24, 3), 120))
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("hello")
    case("predict: an unreadable image and a non-image file",
         ["predict", "--checkpoint", s(last), "--input", s(photos), "--output", s(ROOT / "p")])
    case("benchmark of a missing checkpoint", ["benchmark", "nosuchfile.pt", "--device", "cpu"])
    case("benchmark of an unknown model name", ["benchmark", "pspnet7", "--device", "cpu"])
    case("export of a missing checkpoint", ["export", s(ROOT / "nosuch.pt")])
    # ---- compare
    cmp_cfg = ROOT / "configs" / "cmp.yaml"
    cmp_cfg.write_text(yaml.safe_dump({"name": "c", "run_config": s(good), "output_dir": s(ROOT / "cmp"),
                                       "seeds": [1], "baseline": "nobase", "entries": [{"name": "base"}]}))
    case("comparison whose baseline is not an entry", ["compare", s(cmp_cfg)])
    run_dir = ROOT / "cmp" / "base" / "seed1"
    run_dir.mkdir(parents=True)
    shutil.copy(ROOT / "runs" / "good" / "config.yaml", run_dir / "config.yaml")
    (run_dir / "metrics.json").write_text("{}")
    cmp_cfg.write_text(yaml.safe_dump({"name": "c", "run_config": s(good), "output_dir": s(ROOT / "cmp"),
                                       "seeds": [1], "baseline": "base", "set": ["train.epochs=2"],
                                       "entries": [{"name": "base"}]}))
    case("compare after the comparison's config changed", ["compare", s(cmp_cfg)])
    # ---- reading images, masks, list files and prediction maps as the user sees them
    wide = binary_set(ROOT / "wide")
    Image.fromarray(np.full((32, 32), 30000, np.uint16)).save(wide / "Image" / "a.png")
    case("16-bit image (read scaled, not white)", ["check-data", s(config("wide", wide))])
    floaty = binary_set(ROOT / "floaty")
    (floaty / "Image" / "a.png").unlink()
    Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(floaty / "Image" / "a.tif")
    case("floating-point photo", ["check-data", s(config("floaty", floaty))])
    alpha = binary_set(ROOT / "alpha")
    square = np.pad(np.full((16, 16), 255, np.uint8), 8)
    Image.fromarray(np.dstack([np.zeros((32, 32, 3), np.uint8), square]), "RGBA").save(alpha / "Mask" / "a.png")
    case("binary mask drawn in the alpha channel", ["check-data", s(config("alpha", alpha))])
    clash = binary_set(ROOT / "clash")
    shifted = np.roll(square, 8, axis=1)  # the alpha marks other pixels than the colour
    Image.fromarray(np.dstack([np.repeat(square[..., None], 3, 2), shifted]), "RGBA").save(clash / "Mask" / "a.png")
    case("binary mask whose colour and alpha disagree", ["check-data", s(config("clash", clash))])
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    upright = binary_set(ROOT / "upright")
    (upright / "Image" / "a.png").unlink()
    Image.new("RGB", (24, 32)).save(upright / "Image" / "a.jpg", exif=exif)  # stored 32×24 (H×W), shown 24×32
    grey(upright / "Mask" / "a.png", np.zeros((24, 32)))
    case("photo with an EXIF orientation, mask drawn upright", ["check-data", s(config("upright", upright))])
    stored = binary_set(ROOT / "stored")
    (stored / "Image" / "a.png").unlink()
    Image.new("RGB", (24, 32)).save(stored / "Image" / "a.jpg", exif=exif)
    grey(stored / "Mask" / "a.png", np.zeros((32, 24)))
    case("rotated photo whose mask fits the stored pixels", ["check-data", s(config("stored", stored))])
    twins = binary_set(ROOT / "twins")
    grey(twins / "Image" / "a.jpg", np.zeros((32, 32, 3)))
    case("a.jpg and a.png both in Image/", ["check-data", s(config("twins", twins))])
    bom = binary_set(ROOT / "bom")
    (bom / "train.txt").write_text("a\nb\nc\nd\n", encoding="utf-8-sig")
    case("list file starting with a byte-order mark", ["check-data", s(config("bom", bom))])
    maps = np.pad(np.full((8, 8), 200), 4) + np.arange(16)[None, :] * 3  # a soft map: scores not all perfect
    for kind, values, suffix in (("p8", maps.astype(np.uint8), ".png"), ("p16", maps.astype(np.uint16) * 257, ".png"),
                                 ("pbig", maps.astype(np.float32), ".tif"), ("pint", maps.astype(np.int32), ".tif")):
        for name in ("a", "b"):
            (ROOT / kind).mkdir(exist_ok=True)
            Image.fromarray(values).save(ROOT / kind / f"{name}{suffix}")
    case("eval --pred: 8-bit maps (reference)", ["eval", "--pred", s(ROOT / "p8"), "--gt", s(gt)])
    case("eval --pred: the same maps at 16 bits", ["eval", "--pred", s(ROOT / "p16"), "--gt", s(gt)])
    case("eval --pred: float maps outside [0, 1]", ["eval", "--pred", s(ROOT / "pbig"), "--gt", s(gt)])
    case("eval --pred: 32-bit integer maps", ["eval", "--pred", s(ROOT / "pint"), "--gt", s(gt)])
    # ---- settings found before training, settings that train nothing, devices, caches, arguments
    case("eval.metric misspelled (found before training)", ["train", s(good), "--set", "eval.metric=mae"])
    case("eval.scales empty (found before training)", ["train", s(good), "--set", "eval.scales=[]"])
    twice = config("twice", data, distill={"methods": [{"name": "sad", "start": 0.0},
                                                       {"name": "sad", "start": 0.0, "weight": 0.2}]})
    case("the same method listed twice (terms sad/… and sad_2/…)", ["train", s(twice)])
    case("optim.lr 0 (a warning)", ["check-data", s(good), "--set", "optim.lr=0"])
    semantic = config("semantic", semantic_set(ROOT / "semantic"), "semantic")
    case("data.crop_size 1 (a warning)", ["check-data", s(semantic), "--set", "data.crop_size=1"])
    listed = ROOT / "configs" / "listed.yaml"
    listed.write_text(yaml.safe_dump({"base": [s(good), "missing.yaml"], "name": "listed"}))
    case("base: a list naming a missing file", ["check-data", s(listed)])
    case("negative learning rate", ["train", s(good), "--set", "optim.lr=-0.01"])
    case("loss.main_weight 0 with no method", ["train", s(good), "--set", "loss.main_weight=0"])
    case("train.device cuda on a machine without CUDA", ["train", s(good), "--set", "train.device=cuda"],
         lambda: patched(torch.cuda, "is_available", lambda: False))
    case("unknown device string", ["train", s(good), "--set", "train.device=gpu"])
    from segkd.models import build_model

    pspnet = {"name": "pspnet", "backbone": "resnet18", "output_stride": 8}
    torch.save(build_model("pspnet", num_classes=3, backbone="resnet18", output_stride=8).state_dict(),
               ROOT / "teacher.pth")
    cache = ROOT / "teacher_cache"
    kd = config("kd_cache", ROOT / "semantic", "semantic", distill={
        "teacher": {"model": pspnet, "checkpoint": s(ROOT / "teacher.pth"), "cache": s(cache)},
        "methods": [{"name": "logits_kd", "at": "out"}]})
    case("teacher cache filled ahead (reference)", ["cache-teacher", s(kd)])
    manifest = (cache / "manifest.json").read_text()
    (cache / "manifest.json").write_text("")
    case("teacher cache whose manifest is empty", ["cache-teacher", s(kd)])
    (cache / "manifest.json").write_text("{\"format\": \"segkd-teacher-cache-v2\", \"maps\": [")
    case("teacher cache whose manifest is corrupt", ["train", s(kd)])
    (cache / "manifest.json").write_text(manifest)
    maps = sorted((cache / "maps").glob("*.npy"))
    for path in maps:
        path.write_bytes(b"")
    case("teacher cache with empty map files", ["train", s(kd)])
    for path in maps:
        np.save(path, np.zeros((5, 32, 32), np.float16))
    case("teacher cache map with another class count", ["train", s(kd)])
    camvid = ROOT / "camvid"
    for split in ("train", "val"):
        for name in ("f0", "f1", "f2", "f3"):
            grey(camvid / split / f"{name}.png", np.full((32, 32, 3), 90))
            label = np.full((32, 32), 11)  # CamVid's void, read as 255
            label[4:20, 4:20] = 1
            grey(camvid / f"{split}annot" / f"{name}.png", label)
    camvid_run = config("camvid", camvid, "semantic", data={"layout": "camvid", "root": s(camvid), "crop_size": 32,
                                                            "base_size": 32, "batch_size": 2, "num_workers": 0})
    camvid_cmp = ROOT / "configs" / "cmp_camvid.yaml"
    camvid_cmp.write_text(yaml.safe_dump({
        "name": "camvid", "run_config": s(camvid_run), "output_dir": s(ROOT / "cmpcv"), "seeds": [1],
        "baseline": "base", "entries": [{"name": "base"}], "qualitative_images": 2, "latency_size": 32}))
    case("compare on a layout whose labels are mapped (CamVid's void)", ["compare", s(camvid_cmp)])
    case("eval --num-classes 0", ["eval", "--pred", s(ROOT / "p8"), "--gt", s(gt), "--num-classes", "0"])
    case("eval --output naming a folder", ["eval", "--pred", s(ROOT / "p8"), "--gt", s(gt), "--output", s(ROOT)])
    case("export --size 0 0", ["export", s(last), "--size", "0", "0"])
    case("export --size too small for the model", ["export", s(last), "--size", "8", "8", "--output",
                                                   s(ROOT / "small.onnx")])

    # ---- files that would run code, outputs over inputs, results and run folders
    class Payload:
        def __reduce__(self):
            return (shutil.rmtree, (s(ROOT / "nothing-here"), True))

    crafted = torch.load(last, weights_only=True)
    crafted["payload"] = Payload()
    torch.save(crafted, ROOT / "crafted.pt")
    case("a checkpoint that carries code (any command that opens it)", ["eval", "--checkpoint", s(ROOT / "crafted.pt")])
    imports = torch.load(last, weights_only=True)
    imports["config"]["model"] = {"name": "import", "target": "os:getcwd"}
    torch.save(imports, ROOT / "imports.pt")
    case("a checkpoint whose stored config imports code", ["eval", "--checkpoint", s(ROOT / "imports.pt")])
    own = ROOT / "own_photos"
    grey(own / "x.png", np.full((20, 24, 3), 120))
    case("predict --output inside --input", ["predict", "--checkpoint", s(last), "--input", s(own),
                                             "--output", s(own / "preds")])
    grey(own / "x.jpg", np.full((20, 24, 3), 90))
    case("predict: two inputs with one name (x.jpg, x.png)",
         ["predict", "--checkpoint", s(last), "--input", s(own), "--output", s(ROOT / "own_preds")])
    case("eval --save-dir the mask folder", ["eval", "--checkpoint", s(last), "--save-dir", s(data / "Mask")])
    case("export --output the checkpoint itself", ["export", s(last), "--output", s(last)])
    kept = config("kept", data)
    (ROOT / "runs" / "kept").mkdir(parents=True)
    (ROOT / "runs" / "kept" / "metrics.json").write_text("{}")
    case("a start into a folder holding results but no last.pt", ["train", s(kept)])
    case("--resume into a folder holding results but no last.pt", ["train", s(kept), "--resume"])
    from segkd.engine.resume import hold_run_folder

    case("a second training into a run folder in use", ["train", s(config("busy", data))],
         lambda: hold_run_folder(ROOT / "runs" / "busy"))

    def sigterm(run, batch, epoch):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)
        return real_step(run, batch, epoch)

    real_step = trainer_module.train_step
    case("SIGTERM during training (a batch scheduler's stop)", ["train", s(config("term", data))],
         lambda: patched(trainer_module, "train_step", sigterm))

    print("| # | bad input | command | exit | what the user sees |")
    print("|---|---|---|---|---|")
    for i, (what, command, code, text) in enumerate(ROWS, 1):
        print(f"| {i} | {what} | `{command}` | {code} | {text} |")
    shutil.rmtree(ROOT, ignore_errors=True)
    sys.exit(any(code == "TRACEBACK" for _, _, code, _ in ROWS))


if __name__ == "__main__":
    run()
