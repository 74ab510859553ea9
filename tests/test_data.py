import pytest
import torch
from PIL import Image

from robust_mc.config import DataConfig, TrainRunConfig, build_config
from robust_mc.data import as_float, batches, load_data, random_crop_flip
from robust_mc.errors import UserError


@pytest.mark.parametrize("name", ["synthetic", "digits"])
def test_splits_are_disjoint_and_in_unit_range(name):
    data = load_data(DataConfig(dataset=name, val_size=50))
    assert len(data.val) == 50
    for split in (data.train, data.val, data.test):
        x = as_float(split.images)
        assert x.min() >= 0 and x.max() <= 1
        assert split.labels.max() < data.info.num_classes
    train_rows = {tuple(r.tolist()) for r in data.train.images.flatten(1)[:, :16]}
    assert not any(tuple(r.tolist()) in train_rows for r in data.val.images.flatten(1)[:, :16])


def test_val_split_depends_on_seed_only():
    a = load_data(DataConfig(dataset="synthetic", val_seed=3))
    b = load_data(DataConfig(dataset="synthetic", val_seed=3))
    c = load_data(DataConfig(dataset="synthetic", val_seed=4))
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)


def test_batched_augmentation_keeps_shape_and_content():
    x = torch.rand(16, 3, 8, 8)
    out = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(out, x)
    out = random_crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_batches_cover_the_split_once():
    data = load_data(DataConfig(dataset="synthetic"))
    seen = sum(len(y) for _, y in batches(data.train, 64, shuffle=True,
                                           generator=torch.Generator().manual_seed(0)))
    assert seen == len(data.train)


def test_imagefolder_reads_train_and_test(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for split, count in (("train", 12), ("test", 4)):
        for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), color).save(folder / f"{i}.png")
    for _ in range(2):  # the second load reads the decoded cache
        data = load_data(DataConfig(dataset=f"imagefolder:{tmp_path / 'imgs'}", val_size=4))
        assert data.info.num_classes == 2 and data.info.image_size == 8
        assert len(data.train) + len(data.val) == 24 and len(data.test) == 8
        assert data.train.images.dtype == torch.uint8


def test_imagefolder_without_test_is_a_clear_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no test/ sub-folder"):
        load_data(DataConfig(dataset=f"imagefolder:{tmp_path}"))


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset"):
        load_data(DataConfig(dataset="mnistt"))


def test_imagefolder_prefixes_sample_every_class(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for index, cls in enumerate(("a", "b", "c")):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(20):
                Image.new("RGB", (4, 4), (80 * index, 0, 0)).save(folder / f"{i}.png")
    data = load_data(DataConfig(dataset=f"imagefolder:{tmp_path / 'imgs'}", val_size=3,
                                train_limit=15, test_limit=15))
    assert set(data.train.labels.tolist()) == {0, 1, 2}
    assert set(data.test.labels.tolist()) == {0, 1, 2}


def a_folder(root, colour=lambda index: (80 * index, 0, 0), classes=("a", "b"), count=4):
    for split in ("train", "test"):
        for index, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (4, 4), colour(index)).save(folder / f"{i}.png")
    return root


def test_a_channel_that_never_varies_is_centred_not_divided_by_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = a_folder(tmp_path / "imgs")  # green and blue are 0 everywhere
    data = load_data(DataConfig(dataset=f"imagefolder:{root}", val_size=2))
    assert data.info.std[0] > 0 and data.info.std[1:] == (1.0, 1.0)
    from robust_mc.models import create_model

    model = create_model("cnn", num_classes=2, in_channels=3, mean=data.info.mean,
                         std=data.info.std)
    assert torch.isfinite(model(as_float(data.train.images))).all()


def test_a_fifo_among_the_images_is_refused_not_opened(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = a_folder(tmp_path / "imgs")
    os.mkfifo(root / "train" / "a" / "blocks.png")  # opening it would wait for a writer
    with pytest.raises(UserError, match="blocks.png is not a regular file"):
        load_data(DataConfig(dataset=f"imagefolder:{root}"))


@pytest.mark.parametrize("text", ["nan:nan", "0.5:inf", "0.5:0", "1e999:1"])
def test_a_normalization_must_be_finite_with_positive_stds(text):
    from robust_mc.data import parse_normalization

    with pytest.raises(UserError, match="finite numbers, positive stds"):
        parse_normalization(text)


def test_a_registered_dataset_is_offered_by_the_flag_and_loads(capsys):
    """A new dataset is one registered function: --dataset lists it, the config accepts it
    (with its argument) and load_data carves its validation split."""
    from robust_mc import cli
    from robust_mc.data import (
        DATASETS,
        DatasetInfo,
        DatasetRequest,
        Loaded,
        Split,
        register_dataset,
    )

    with DATASETS.scoped():
        @register_dataset("stripes", argument="WIDTH")
        def _stripes(request: DatasetRequest) -> Loaded:
            width = int(request.argument or 2)
            labels = torch.arange(60) % 2
            images = torch.zeros(60, 1, 6, 6)
            images[labels == 1, :, :, :width] = 1.0
            info = DatasetInfo("stripes", 2, 1, 6, (0.5,), (0.5,), 0, False)
            return Loaded(info, Split(images[:50], labels[:50]), Split(images[50:], labels[50:]))

        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["train", "--help"])
        assert "stripes[:WIDTH]" in capsys.readouterr().out
        args = cli.build_parser().parse_args(["train", "--dataset", "stripes:3"])
        cfg = build_config(TrainRunConfig, None, {"data.dataset": args.__dict__["data.dataset"]})
        data = load_data(cfg.data)
        assert data.info.name == "stripes" and len(data.train) + len(data.val) == 50
        assert float(data.test.images[1, 0, 0, :3].sum()) == 3.0  # the argument reached it
    with pytest.raises(UserError, match="unknown dataset 'stripes'"):
        build_config(TrainRunConfig, None, {"data.dataset": "stripes"})
