"""shared/images/readers.py and decode.py: folders, MedMNIST .npz, image-path tables; RGB decoding; bad images."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from shared.core.errors import DataError
from shared.images.decode import decode_images, open_image
from shared.images.pixels import PixelMapping
from shared.images.readers import encode_image_labels, label_names_for, read_image_folder, read_image_table, read_images
from shared.images.readers import read_npz
from tests.helpers import IMAGE_SAMPLE

SAMPLE = str(IMAGE_SAMPLE)


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("b_pneumonia", "a_normal"):
        for i in range(3):
            _save(str(tmp_path / "train" / label / f"{i}.png"), rng.integers(0, 255, (10, 12), dtype=np.uint8))
    return tmp_path / "train"


def test_folder_classes_are_sorted_subfolders(folder):
    images = read_image_folder(str(folder))
    assert images.label_names == ["a_normal", "b_pneumonia"]
    assert images.labels == ["a_normal"] * 3 + ["b_pneumonia"] * 3
    assert not images.multi_label and images.labeled


def test_folder_errors(tmp_path, folder):
    with pytest.raises(DataError, match="does not exist"):
        read_image_folder(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "flat")
    with pytest.raises(DataError, match="no class subfolders"):
        read_image_folder(str(tmp_path / "flat"))
    os.makedirs(folder / "empty_class")
    with pytest.raises(DataError, match="'empty_class' has no images"):
        read_image_folder(str(folder))


def test_grayscale_becomes_rgb_with_equal_channels(folder):
    decoded = decode_images(read_image_folder(str(folder)), 8)
    assert decoded.pixels.shape == (6, 3, 8, 8) and decoded.pixels.dtype == torch.uint8
    assert torch.equal(decoded.pixels[:, 0], decoded.pixels[:, 1]) and torch.equal(decoded.pixels[:, 1], decoded.pixels[:, 2])


def test_rgba_16bit_and_palette_images_convert(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent -> black
    assert open_image(rgba).getpixel((0, 0)) == (0, 0, 0)
    sixteen = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    # a window (the run's, or --window), never the image's own min-max; without one, the 16-bit range
    assert np.asarray(open_image(sixteen, mapping=PixelMapping((2000, 4000))))[..., 0].tolist() == [[0, 64], [128, 255]]
    assert np.asarray(open_image(sixteen))[..., 0].tolist() == [[0, 4], [8, 16]]
    palette = Image.new("P", (3, 3), 5)
    assert open_image(palette).mode == "RGB"


def _npz(path, images, labels, **extra):
    arrays = {"train_images": images, "train_labels": labels, "val_images": images[:2], "val_labels": labels[:2],
              "test_images": images[:3], "test_labels": labels[:3], **extra}
    np.savez(path, **arrays)
    return str(path)


def test_npz_grayscale_single_label(tmp_path):
    images = np.arange(5 * 6 * 6, dtype=np.uint8).reshape(5, 6, 6)
    path = _npz(tmp_path / "d.npz", images, np.array([[0], [2], [1], [2], [0]], dtype=np.uint8))
    train = read_npz(path, "train")
    assert train.labels == ["0", "2", "1", "2", "0"] and train.label_names == ["0", "1", "2"]
    assert len(read_npz(path, "validation")) == 2 and len(read_npz(path, "test")) == 3
    pixels = decode_images(train, 6).pixels
    assert pixels.shape == (5, 3, 6, 6)
    assert torch.equal(pixels[1, 2], torch.from_numpy(images[1]))  # grayscale copied into every channel


def test_npz_rgb_and_float_images(tmp_path):
    images = np.random.default_rng(0).random((4, 5, 5, 3))
    path = _npz(tmp_path / "rgb.npz", images, np.array([0, 1, 0, 1]))
    pixels = decode_images(read_npz(path, "train"), 5).pixels
    assert torch.equal(pixels[0].permute(1, 2, 0), torch.from_numpy(np.round(images[0] * 255).astype(np.uint8)))


def test_npz_multi_label(tmp_path):
    labels = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]])
    path = _npz(tmp_path / "m.npz", np.zeros((4, 5, 5), np.uint8), labels)
    train = read_npz(path, "train")
    assert train.multi_label and train.labels[0] == ["0", "2"] and train.labels[1] == []
    names = label_names_for([train])
    encoded = encode_image_labels(train, {n: i for i, n in enumerate(names)})
    assert encoded.dtype == np.float32 and np.array_equal(encoded, labels)


@pytest.mark.parametrize(
    "images,labels,match",
    [
        (np.zeros((3, 4, 4), np.uint8), np.array([0, 1]), "3 images but .* 2 labels"),
        (np.zeros((3, 4, 4, 4, 4), np.uint8), np.array([0, 1, 0]), "3-D volumes"),
        (np.zeros((3, 4, 4), np.uint8), np.array([0, -1, 0]), r"train_labels\[1\] is not a non-negative"),
        (np.full((3, 4, 4), 2.5, np.float32), np.array([0, 1, 0]), "must be uint8"),
    ],
)
def test_npz_errors(tmp_path, images, labels, match):
    np.savez(tmp_path / "bad.npz", train_images=images, train_labels=labels)
    with pytest.raises(DataError, match=match):
        read_npz(str(tmp_path / "bad.npz"), "train")


def test_npz_missing_split(tmp_path):
    np.savez(tmp_path / "t.npz", train_images=np.zeros((2, 3, 3), np.uint8), train_labels=np.array([0, 1]))
    with pytest.raises(DataError, match="missing array.*val_images"):
        read_npz(str(tmp_path / "t.npz"), "validation")


def test_csv_and_jsonl_tables(tmp_path, folder):
    (tmp_path / "t.csv").write_text("image,label\ntrain/a_normal/0.png,normal\ntrain/b_pneumonia/1.png,pneumonia\n")
    table = read_image_table(str(tmp_path / "t.csv"))
    assert table.labels == ["normal", "pneumonia"] and table.refs[1] == (str(tmp_path / "t.csv"), 3)
    assert decode_images(table, 4).pixels.shape == (2, 3, 4, 4)
    rows = [{"path": "train/a_normal/0.png", "findings": ["effusion", "opacity"]}, {"path": "train/a_normal/1.png", "findings": []}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    multi = read_image_table(str(tmp_path / "t.jsonl"), image_column="path", label_column="findings")
    assert multi.multi_label and multi.labels == [["effusion", "opacity"], []]
    (tmp_path / "s.csv").write_text("image,label\ntrain/a_normal/0.png,effusion;opacity\n")
    assert read_image_table(str(tmp_path / "s.csv"), label_separator=";").labels == [["effusion", "opacity"]]


def test_table_errors_name_file_and_row(tmp_path, folder):
    (tmp_path / "t.csv").write_text("image,label\ntrain/a_normal/0.png,normal\n,normal\n")
    with pytest.raises(DataError, match=r"t\.csv:3: empty or missing image path"):
        read_image_table(str(tmp_path / "t.csv"))
    (tmp_path / "u.csv").write_text("image,label\ntrain/a_normal/0.png,\n")
    with pytest.raises(DataError, match=r"u\.csv:2: missing label \(column 'label'\)"):
        read_image_table(str(tmp_path / "u.csv"))
    (tmp_path / "v.csv").write_text("img,label\nx.png,a\n")
    with pytest.raises(DataError, match="column 'image' not found"):
        read_image_table(str(tmp_path / "v.csv"))
    (tmp_path / "w.csv").write_text("image,label\ntrain/a_normal/0.png,a\nmissing.png,b\n")
    with pytest.raises(DataError, match=r"w\.csv:3: cannot read image '.*missing\.png': file does not exist"):
        decode_images(read_image_table(str(tmp_path / "w.csv")), 4)


def test_unlabeled_table(tmp_path, folder):
    (tmp_path / "p.csv").write_text("image\ntrain/a_normal/0.png\n")
    table = read_image_table(str(tmp_path / "p.csv"))
    assert not table.labeled


def test_corrupt_image_error_or_skip(folder):
    corrupt = folder / "a_normal" / "9_corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    truncated = folder / "b_pneumonia" / "9_truncated.png"
    good = (folder / "b_pneumonia" / "0.png").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    images = read_image_folder(str(folder))
    with pytest.raises(DataError, match=r"9_corrupt\.png: cannot read image"):
        decode_images(images, 4)
    decoded = decode_images(images, 4, skip_bad=True)
    assert len(decoded.bad) == 2 and len(decoded.kept) == len(images) - 2 == decoded.pixels.shape[0]
    assert all(images.labels[i] for i in decoded.kept)
    assert "9_truncated.png" in decoded.bad[1]


def test_label_names_merge_and_unknown_label(folder):
    train = read_image_folder(str(folder))
    other = train.select([0])
    other.labels = ["c_other"]
    assert label_names_for([train, other]) == ["a_normal", "b_pneumonia", "c_other"]
    with pytest.raises(DataError, match="label 'c_other' does not occur in the model's labels"):
        encode_image_labels(other, {"a_normal": 0, "b_pneumonia": 1})


def test_bundled_sample_data_reads_in_every_format():
    sizes = {}
    for path, split in [("folders/train", "train"), ("train.csv", "train"), ("train.jsonl", "train"),
                        ("sample.npz", "train"), ("sample_multilabel.npz", "validation")]:
        images = read_images(os.path.join(SAMPLE, path), split)
        sizes[path] = len(images)
        assert images.labeled
    assert sizes["folders/train"] == sizes["train.csv"] == sizes["train.jsonl"] == 48
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(SAMPLE) for f in fs)
    assert total < 300 * 1024


def test_saved_datasets_folder_with_image_column(tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["normal", "effusion"])})
    images = [Image.fromarray(np.full((6, 6), v, np.uint8)) for v in (10, 200, 90)]
    datasets.Dataset.from_dict({"image": images, "label": [1, 0, 1]}, features=features).save_to_disk(str(tmp_path / "ds"))
    loaded = read_images(str(tmp_path / "ds"), "train")
    assert loaded.labels == ["effusion", "normal", "effusion"] and loaded.label_names == ["normal", "effusion"]
    pixels = decode_images(loaded, 6).pixels
    assert pixels.shape == (3, 3, 6, 6) and int(pixels[1, 0, 0, 0]) == 200


def bomb_png(path, side=30000):  # side: a multiple of 1000
    """A valid 1-bit PNG of side x side black pixels: about 0.5 MB on disk, ``side**2`` pixels once decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(1), b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(packer.compress(row * 1000) for _ in range(side // 1000)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_an_empty_image_file_says_it_is_empty(folder, tmp_path):
    (folder / "a_normal" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        decode_images(read_image_folder(str(folder)), 4)
    assert str(info.value) == f"{folder}/a_normal/empty.png: cannot read image: the file is empty (0 bytes)"
    table = tmp_path / "t.csv"
    table.write_text("image,label\ntrain/a_normal/0.png,a\ntrain/a_normal/empty.png,a\n")
    with pytest.raises(DataError) as info:
        decode_images(read_image_table(str(table)), 4)
    assert str(info.value) == (f"{table}:3: cannot read image '{tmp_path}/train/a_normal/empty.png': the file is "
                               "empty (0 bytes)")
    with pytest.raises(DataError, match="the image is empty"):  # a datasets Image cell without bytes
        open_image({"bytes": b"", "path": None}, ("hub[3]", None))


def test_images_above_pillows_pixel_limit_are_one_line_or_skipped(folder, monkeypatch):
    from shared.images.pixels import ImageTooLarge

    # Pillow errors above twice its limit and only warns between one and two times it: both are refused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _save(str(folder / "a_normal" / "warned.png"), np.zeros((12, 12), np.uint8))  # 144 pixels
    _save(str(folder / "b_pneumonia" / "bomb.png"), np.zeros((16, 16), np.uint8))  # 256 pixels
    for name in ("a_normal/warned.png", "b_pneumonia/bomb.png"):
        with pytest.raises(ImageTooLarge) as info:
            open_image(str(folder / name))
        assert str(info.value) == (f"{folder}/{name}: cannot read image: the image has more than 100 pixels "
                                   "(Pillow's Image.MAX_IMAGE_PIXELS, its guard against decompression bombs); "
                                   "downsample it first")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 130)  # the 10 x 12 images pass, the two larger ones are skipped
    decoded = decode_images(read_image_folder(str(folder)), 4, skip_bad=True)
    assert len(decoded.bad) == 2 and all("more than 130 pixels" in b for b in decoded.bad)


def test_folder_reader_says_what_it_takes_from_nested_folders_and_leaves_out(folder, caplog):
    _save(str(folder / "a_normal" / "2024" / "scan.png"), np.zeros((4, 4), np.uint8))
    _save(str(folder / "a_normal" / "2024" / "deeper" / "scan.png"), np.zeros((4, 4), np.uint8))
    (folder / "b_pneumonia" / "notes.txt").write_text("not an image")
    (folder / "b_pneumonia" / "Thumbs").write_bytes(b"\x00" * 200)  # no extension, not DICOM
    (folder / "b_pneumonia" / "._0.png").write_bytes(b"resource fork")  # hidden: neither taken nor counted
    with caplog.at_level("INFO", logger="shared.images.readers"):
        images = read_image_folder(str(folder))
    assert len(images) == 8 and images.labels.count("a_normal") == 5
    assert "train: 2 of 8 images sit in folders nested below their class folder and take its class" in caplog.text
    assert "train: 2 file(s) in the class folders left out as not images (.txt, no extension)" in caplog.text
    assert str(folder) not in caplog.text  # names of folders, never paths, in logs
