"""DICOM and 16-bit input of the image recipe: the pixel pipeline (modality LUT -> window -> MONOCHROME1 -> 8 bits),
one mapping per run saved with the model, compressed files or their one-line error, and no header value anywhere.

Every DICOM file here is generated with pydicom in the test; the header values are canaries.
"""

from __future__ import annotations

import csv
import os
import re
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from shared.core.errors import DataError
from shared.images.decode import decode_images, open_image
from shared.images.pixels import PIXEL_MAPPING_FILE, PRESETS, PixelMapping, apply_window, dicom_groups, dicom_to_uint8
from shared.images.pixels import fit_pixel_mapping, parse_window
from shared.images.readers import ImageSet, read_image_folder, read_npz
from tests.helpers import assert_one_line, run_cli, run_in_process

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid  # noqa: E402

CANARY = "ZQXCANARY"  # in every header: patient name, ID, birth date stand-ins, institution


def make_dicom(path, stored, *, photometric="MONOCHROME2", slope=None, intercept=None, window=None, rle=False,
               frames=1, patient="P001", pixel_data=True):
    """A single-frame (or ``frames``-frame) 12-bit CT-like DICOM file holding ``stored`` (uint16 values)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName = f"{CANARY}^{patient}"
    ds.PatientID = f"{CANARY}-{patient}"
    ds.PatientBirthDate = "19010101"
    ds.InstitutionName = f"{CANARY} General"
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CT"
    stored = np.asarray(stored, dtype=np.uint16)
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
        stored = np.stack([stored] * frames)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = stored.tobytes()
        if rle:
            ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(size=16, low=0, high=4095):
    return np.linspace(low, high, size * size).reshape(size, size).round().astype(np.uint16)


# ------------------------------------------------------------------------------------------ the pixel pipeline
def test_modality_lut_then_the_files_window(tmp_path):
    hu = np.array([[-1024, -160], [40, 240]])  # Hounsfield units; stored = HU + 1024 (slope 1, intercept -1024)
    path = make_dicom(tmp_path / "ct.dcm", hu + 1024, slope=1, intercept=-1024, window=(40, 400))
    out = dicom_to_uint8(str(path), PixelMapping())
    # the file's LINEAR window (center 40, width 400): -160 and below black, 240 and above white, 40 mid-grey
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[1, 1] == 255 and 126 <= out[1, 0] <= 129


def test_window_flag_and_presets_override_the_files_window(tmp_path):
    hu = np.array([[-1024, -600], [150, 400]])
    path = make_dicom(tmp_path / "ct.dcm", hu + 1024, slope=1, intercept=-1024, window=(40, 400))
    lung = dicom_to_uint8(str(path), PixelMapping.given("lung"))
    assert lung.tolist() == apply_window(hu, *PRESETS["lung"]).tolist() == [[55, 128], [255, 255]]
    assert dicom_to_uint8(str(path), PixelMapping.given("-600,1500")).tolist() == lung.tolist()
    assert PixelMapping.given("lung").source == "preset lung" and PixelMapping.given("1,2").source == "--window"


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    stored = ramp()
    two = dicom_to_uint8(str(make_dicom(tmp_path / "m2.dcm", stored, window=(2048, 2000))), PixelMapping())
    one = dicom_to_uint8(str(make_dicom(tmp_path / "m1.dcm", stored, window=(2048, 2000),
                                        photometric="MONOCHROME1")), PixelMapping())
    assert two.min() == 0 and two.max() == 255
    assert np.array_equal(one, 255 - two)  # inverted after the window, not before (that would move the window)


def test_rle_compressed_file_decodes_like_the_uncompressed_one(tmp_path):
    stored = ramp()
    plain = make_dicom(tmp_path / "plain.dcm", stored)
    rle = make_dicom(tmp_path / "rle.dcm", stored, rle=True)
    assert pydicom.dcmread(rle).file_meta.TransferSyntaxUID == RLELossless
    mapping = PixelMapping((2000.0, 3000.0), "--window")
    assert np.array_equal(dicom_to_uint8(str(plain), mapping), dicom_to_uint8(str(rle), mapping))


def jpeg_ls_file(path):
    """A JPEG-LS transfer syntax file: pydicom needs pylibjpeg-libjpeg (or pyjpegls / gdcm) to decode it."""
    from pydicom.encaps import encapsulate

    make_dicom(path, ramp())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 32 + b"\xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.skipif(importlib.util.find_spec("libjpeg") is not None, reason="a JPEG-LS decoder is installed")
def test_compressed_file_without_a_decoder_is_one_line_naming_the_package(tmp_path):
    path = jpeg_ls_file(tmp_path / "jls.dcm")
    with pytest.raises(DataError) as info:
        dicom_to_uint8(str(path), PixelMapping())
    message = str(info.value)
    assert message.startswith(f"{path}: its pixel data is compressed (JPEG-LS Lossless") and "pylibjpeg" in message
    assert CANARY not in message and "\n" not in message


@pytest.mark.parametrize("kind,match", [
    ("multi-frame", r"multi-frame DICOM \(3 frames\)"),
    ("no pixels", "has no pixel data"),
    ("not dicom", "not a DICOM file"),
])
def test_unreadable_dicom_files_are_one_line(tmp_path, kind, match):
    path = tmp_path / "x.dcm"
    if kind == "multi-frame":
        make_dicom(path, ramp(), frames=3)
    elif kind == "no pixels":
        make_dicom(path, ramp(), pixel_data=False)
    else:
        path.write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError, match=match) as info:
        dicom_to_uint8(str(path), PixelMapping())
    assert str(info.value).startswith(str(path)) and CANARY not in str(info.value)


@pytest.mark.parametrize("text", ["wide", "40", "40,0", "40,-5", "a,b"])
def test_bad_window_is_one_line(text):
    with pytest.raises(DataError, match="--window"):
        parse_window(text)


# ------------------------------------------------------------------------------------ 16-bit: one rule per run
def test_sixteen_bit_images_share_one_window_measured_on_training_images(tmp_path):
    dark = tmp_path / "dark.png"
    bright = tmp_path / "bright.png"
    Image.fromarray(ramp(16, 1000, 2000)).save(dark)  # 16-bit PNGs with different ranges
    Image.fromarray(ramp(16, 1000, 9000)).save(bright)
    mapping = fit_pixel_mapping([str(dark), str(bright)], None)
    assert mapping.source == "training percentiles" and mapping.window is not None
    low = mapping.window[0] - mapping.window[1] / 2
    assert 1000 <= low < 1100  # the 0.5th percentile of both images' values, not of each
    a, b = (np.asarray(open_image(str(p), mapping=mapping))[..., 0] for p in (dark, bright))
    # the same stored value gives the same 8-bit value in both (a per-image stretch would make both 0-255)
    assert a[0, 0] == b[0, 0] and a.max() < 80 and b.max() == 255
    mapping.save(str(tmp_path))
    assert PixelMapping.load(str(tmp_path)) == mapping
    assert json.loads((tmp_path / PIXEL_MAPPING_FILE).read_text())["percentiles"] == [0.5, 99.5]
    # a --window replaces the measured one; 8-bit training images measure nothing
    assert fit_pixel_mapping([str(dark)], "0,4000").window == (0.0, 4000.0)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "eight.png")
    assert fit_pixel_mapping([str(tmp_path / "eight.png")], None) == PixelMapping()


def test_uint16_npz_is_read_and_windowed(tmp_path):
    images = np.stack([ramp(8, 0, 4000), ramp(8, 0, 1000)])
    np.savez(tmp_path / "scans.npz", train_images=images, train_labels=np.array([0, 1]))
    scans = read_npz(str(tmp_path / "scans.npz"), "train")
    mapping = PixelMapping((2000.0, 4000.0), "--window")
    pixels = decode_images(scans, 8, mapping=mapping).pixels
    assert pixels[0, 0].max() == 255 and pixels[1, 0].max() == 64  # 1000 of 0-4000: a quarter, in both runs


def test_group_column_reads_a_dicom_attribute_and_checks_it(tmp_path):
    paths = [str(make_dicom(tmp_path / f"{i}.dcm", ramp(4), patient=f"P{i // 2}")) for i in range(4)]
    groups = dicom_groups(paths, "PatientID", str(tmp_path))
    assert groups[0] == groups[1] != groups[2] == groups[3]
    with pytest.raises(DataError, match="neither a column of the training table nor a DICOM attribute"):
        dicom_groups(paths, "patient", str(tmp_path))
    with pytest.raises(DataError, match="has no AccessionNumber") as info:
        dicom_groups(paths, "AccessionNumber", str(tmp_path))
    assert CANARY not in str(info.value)


# ------------------------------------------------------------------------------- the recipe, end to end (CLI)
def dicom_folders(root, per_class=8, test_per_class=4):
    """Class folders of DICOM files (MONOCHROME1 and 2, rescaled, with and without a window of their own) and one
    PNG per class in the test split: 'opacity' images are bright in the middle. Three images per patient."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for label in ("normal", "opacity"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                stored = rng.integers(800, 1200, (16, 16))
                if label == "opacity":
                    stored[4:12, 4:12] += 2000
                monochrome1 = i % 4 == 1
                if monochrome1:
                    stored = 4095 - stored
                make_dicom(folder / f"{i}.dcm", stored, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
                           slope=1 if i % 2 else None, intercept=-1024 if i % 2 else None,
                           window=(1500, 2500) if i % 3 == 0 else None, patient=f"{split}{label}{i // 3}")
            if split == "test":  # ordinary images mixed in (training groups by a DICOM attribute: DICOM only)
                Image.fromarray(np.full((16, 16), 200 if label == "opacity" else 40, np.uint8)).save(folder / "x.png")
    return root


def outputs_text(*folders):
    """Every byte the runs wrote, as text (binary files included, decoded leniently)."""
    return "".join(p.read_bytes().decode("latin-1") for folder in folders for p in folder.rglob("*") if p.is_file())


def test_dicom_folders_train_predict_and_leak_no_header_value(tiny_vit, tmp_path):
    data = dicom_folders(tmp_path / "data")
    out, pred = tmp_path / "out", tmp_path / "pred"
    train = run_cli("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", data / "train", "--test_dir", data / "test",
        "--output_dir", out, "--do_train", "--do_predict", "--validation_split_percentage", "25",
        "--group_column", "PatientID", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
        "--image_size", "32", "--bootstrap_resamples", "0", "--report_to", "none"])
    assert train.returncode == 0, train.stderr[-3000:]
    mapping = json.loads((out / PIXEL_MAPPING_FILE).read_text())
    assert mapping["source"] == "training percentiles" and mapping["file_windows"] is True
    results = json.loads((out / "all_results.json").read_text())
    assert results["test_samples"] == 10 and results["eval_samples"] + results["train_samples"] == 16
    predicted = run_cli("image_classification", ["--model_dir", out, "--input", data / "test", "--output_dir", pred],
                        entry="predict")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    # predict.py applies the saved mapping: the same probabilities as the training run's --do_predict
    with open(out / "test_predictions.csv") as a, open(pred / "predictions.csv") as b:
        trained, again = list(csv.reader(a)), list(csv.reader(b))
    assert [row[:3] for row in trained] == [row[:3] for row in again] and len(trained) == 11
    assert np.allclose(np.array([r[3:] for r in trained[1:]], float), np.array([r[3:] for r in again[1:]], float),
                       atol=1e-6)
    for text in (train.stdout + train.stderr, predicted.stdout + predicted.stderr, outputs_text(out, pred)):
        assert CANARY not in text and "19010101" not in text

    # a table of .dcm (and .png) paths, and a DICOM file as the service's request body, predict the same
    from shared.deploy.predictors import ImageClassifier
    from shared.deploy.service import BadRequest, answer

    classifier = ImageClassifier(str(out))
    files = [p.relative_to(data) for p in sorted((data / "test").rglob("*.*"))]
    with open(data / "test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "label"], *[[p, p.parent.name] for p in files]])
    outputs = classifier.predict(classifier.decode(classifier.read(str(data / "test.csv"))))
    assert np.allclose(outputs.probs, np.array([r[3:] for r in again[1:]], float), atol=1e-6)
    response = answer(classifier, (data / files[0]).read_bytes(), "application/dicom")
    assert response["prediction"] == again[1][2] and CANARY not in json.dumps(response)
    with pytest.raises(BadRequest, match="pixel data") as info:  # a decoder's absence, or the junk it decodes
        answer(classifier, jpeg_ls_file(tmp_path / "jls.dcm").read_bytes(), "application/dicom")
    assert info.value.status == 400 and CANARY not in str(info.value)


def test_dicom_mistakes_stop_before_training_with_one_line(tiny_vit, tmp_path, capsys):
    data = dicom_folders(tmp_path / "data", per_class=2, test_per_class=1)
    common = ["--model_name_or_path", tiny_vit, "--train_dir", str(data / "train"), "--do_train", "--image_size", "32"]
    status, err = run_in_process("image_classification", [*common, "--output_dir", str(tmp_path / "o1"),
                                                          "--window", "wide"], capsys)
    assert_one_line(status, err, r"--window must be CENTER,WIDTH .*; got 'wide'", tmp_path / "o1")
    status, err = run_in_process("image_classification", [*common, "--output_dir", str(tmp_path / "o2"),
                                                          "--group_column", "Patient",
                                                          "--validation_split_percentage", "50"], capsys)
    assert_one_line(status, err, r".*/train: --group_column 'Patient' is neither a column of the training table nor a "
                    r"DICOM attribute keyword .*", tmp_path / "o2")
    if importlib.util.find_spec("libjpeg") is None:  # through the real command line: a compressed file in a folder
        jpeg_ls_file(data / "train" / "normal" / "compressed.dcm")
        proc = run_cli("image_classification", [*common, "--output_dir", tmp_path / "o3"])
        assert_one_line(proc.returncode, proc.stderr, r".*/train/normal/compressed\.dcm: its pixel data is compressed "
                        r"\(JPEG-LS Lossless.*pylibjpeg.*", tmp_path / "o3")
        assert CANARY not in proc.stderr


def test_folder_reader_lists_dicom_files(tmp_path):
    data = dicom_folders(tmp_path, per_class=2, test_per_class=1)
    images = read_image_folder(str(data / "test"))
    assert sum(s.endswith(".dcm") for s in images.sources) == 2 and len(images) == 4
    assert isinstance(images, ImageSet)


def without_preamble(path, to):
    """The same file as some older writers save it: the file meta group first, no 128-byte preamble nor 'DICM'."""
    to.write_bytes(path.read_bytes()[132:])
    return to


def test_dicom_files_without_an_extension_or_a_preamble_are_read_like_any(tmp_path):
    """PACS exports name files IM0001 or by their UID; a file meta group without a preamble is read with pydicom's
    force=True; DICOMDIR (the export's index, no pixels) and other files are left out."""
    from shared.images.pixels import is_dicom

    made = make_dicom(tmp_path / "full.dcm", ramp())
    for label in ("normal", "opacity"):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        (folder / "IM0001").write_bytes(made.read_bytes())
        without_preamble(made, folder / "1.2.826.0.1.3680043.2.1125.7")
        make_dicom(folder / "DICOMDIR", ramp(), pixel_data=False)
    images = read_image_folder(str(tmp_path / "data"))
    assert [os.path.basename(s) for s in images.sources] == ["1.2.826.0.1.3680043.2.1125.7", "IM0001"] * 2
    expected = dicom_to_uint8(str(made), PixelMapping())
    decoded = decode_images(images, 16, mapping=PixelMapping())
    assert all((decoded.pixels[i, 0].numpy() == expected).all() for i in range(4))
    assert is_dicom((tmp_path / "data" / "normal" / "1.2.826.0.1.3680043.2.1125.7").read_bytes())  # a request body
    assert dicom_groups(images.sources, "PatientID", "data") == [f"{CANARY}-P001"] * 4  # --group_column


def swap_transfer_syntax(path, old, new):
    """The file meta names ``new`` while the data stay written in ``old`` (same-length UIDs, NUL-padded)."""
    raw = path.read_bytes()
    path.write_bytes(raw.replace(old.encode(), new.encode().ljust(len(old), b"\0"), 1))
    return path


@pytest.mark.parametrize("written,declared,match", [
    (RLELossless, "1.2.840.10008.1.2", r"cannot decode DICOM pixel data \(ValueError\) by its transfer syntax "
     r"Implicit VR Little Endian \(1\.2\.840\.10008\.1\.2\): the pixel data may be stored in another syntax"),
    (ExplicitVRLittleEndian, "1.2.840.10008.1.2.5", r"cannot decode DICOM pixel data \(ValueError\) by its "
     r"transfer syntax RLE Lossless \(1\.2\.840\.10008\.1\.2\.5\): the pixel data may be stored in another "
     r"syntax"),
    (ExplicitVRLittleEndian, "1.2.840.10008.1.2.2", r"its data does not match its transfer syntax Explicit VR Big "
     r"Endian \(1\.2\.840\.10008\.1\.2\.2\): .*"),
])
def test_data_that_does_not_match_its_transfer_syntax_is_named_so(tmp_path, caplog, written, declared, match):
    import warnings

    path = make_dicom(tmp_path / "x.dcm", ramp(), rle=written == RLELossless)
    swap_transfer_syntax(path, written, declared)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG"):
        warnings.simplefilter("always")
        with pytest.raises(DataError) as info:
            dicom_to_uint8(str(path), PixelMapping())
    assert re.fullmatch(f"{re.escape(str(path))}: {match}", str(info.value)), str(info.value)
    assert not [w for w in caught if "pydicom" in w.filename]  # pydicom's warnings may quote header values
    assert CANARY not in caplog.text


def test_an_empty_dicom_file_says_it_is_empty(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.dcm: cannot read image: the file is empty \(0 bytes\)"):
        open_image(str(tmp_path / "x.dcm"))
