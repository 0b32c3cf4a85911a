"""Familiarity and near-ties: fitted, stored without pickle, and said on every output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from core import features, reliability
from core.checkpoint import load_checkpoint
from core.config import CheckpointError
from core.explain import explain
from core.image_input import load_image
from core.inference import slice_scores
from core.reliability import DEFAULT_MARGIN, Reliability, choose_margin, uncertain_text, verdict
from tests.conftest import LABELS, SHARED_DATA, encode, head_phantom, make_tiny_checkpoint, needs_data


def gaussian_features(rng, n: int, shift: float = 0.0, size: int = 32):
    labels = rng.integers(0, 4, n)
    centres = np.eye(4, size) * 4
    return centres[labels] + rng.normal(0, 1, (n, size)) + shift, labels


def fitted(rng, size: int = 32, margin: float = 0.3):
    train, train_labels = gaussian_features(rng, 800, size=size)
    held, _ = gaussian_features(rng, 200, size=size)
    return reliability.fit(train, train_labels, held, margin, {"note": "test"})


def test_familiarity_separates_training_like_features_from_shifted_ones():
    rng = np.random.default_rng(0)
    trust = fitted(rng)
    familiar, _ = gaussian_features(rng, 300)
    shifted, _ = gaussian_features(rng, 300, shift=1.5)
    scores = np.r_[trust.familiarity(familiar), trust.familiarity(shifted)]
    assert roc_auc_score(np.r_[np.ones(300), np.zeros(300)], scores) > 0.95
    assert 0 <= scores.min() and scores.max() <= 1
    # About 5 % of fresh in-distribution slices fall below the line, most shifted ones do.
    assert 0.0 < (trust.familiarity(familiar) < 0.05).mean() < 0.12
    assert (trust.familiarity(shifted) < 0.05).mean() > 0.8


def test_a_shift_in_a_small_block_is_not_drowned_by_a_large_one():
    """Two blocks, 64 model features and 4 texture statistics: a shift of the texture alone is
    found when each block is scaled by its own hold-out distances, barely without blocks."""
    rng = np.random.default_rng(4)
    model_part, train_labels = gaussian_features(rng, 800, size=64)
    train = np.c_[model_part, rng.normal(0, 1, (800, 4))]
    held = np.c_[gaussian_features(rng, 200, size=64)[0], rng.normal(0, 1, (200, 4))]
    familiar = np.c_[gaussian_features(rng, 300, size=64)[0], rng.normal(0, 1, (300, 4))]
    shifted = familiar + np.r_[np.zeros(64), np.full(4, 2.0)]
    truth = np.r_[np.ones(300), np.zeros(300)]

    def auc(trust):
        return roc_auc_score(truth, np.r_[trust.familiarity(familiar), trust.familiarity(shifted)])

    blocked = reliability.fit(train, train_labels, held, 0.3, {}, blocks=[(0, 64), (64, 68)])
    single = reliability.fit(train, train_labels, held, 0.3, {})
    assert auc(blocked) > 0.95 and auc(blocked) > auc(single) + 0.1
    assert blocked.info["feature_blocks"] == [[0, 64], [64, 68]] and len(blocked.info["block_scales"]) == 2
    assert 0.0 < (blocked.familiarity(familiar) < 0.05).mean() < 0.12  # the 95 % line still holds


def test_blocks_combined_by_max_take_the_larger_scaled_distance_to_the_nearest_mean():
    rng = np.random.default_rng(5)
    model_part, train_labels = gaussian_features(rng, 600, size=8)
    train = np.c_[model_part, rng.normal(0, 1, (600, 3))]
    held = np.c_[gaussian_features(rng, 200, size=8)[0], rng.normal(0, 1, (200, 3))]
    probe = held[:50] + np.r_[np.zeros(8), np.full(3, 1.5)]
    blocks = [(0, 8), (8, 11)]
    summed = reliability.fit(train, train_labels, held, 0.3, {}, blocks=blocks)
    largest = reliability.fit(train, train_labels, held, 0.3, {}, blocks=blocks, combine="max")
    assert largest.info["combine"] == "max" and summed.info["combine"] == "quadrature"
    # Per class mean, each block's scaled squared distance from the block-diagonal precision.
    per_block = []
    for mean in summed.means.astype(np.float64):
        centred = probe - mean
        per_block.append([np.einsum("nc,cd,nd->n", centred[:, a:b], summed.precision[a:b, a:b], centred[:, a:b])
                          for a, b in blocks])  # fmt: skip
    per_block = np.array(per_block)  # (class, block, image)
    assert np.allclose(largest.distances(probe), np.sqrt(per_block.max(1).min(0)), rtol=1e-4)
    assert np.allclose(summed.distances(probe), np.sqrt(per_block.sum(1).min(0)), rtol=1e-4)
    assert not np.allclose(largest.distances(probe), summed.distances(probe))
    with pytest.raises(ValueError, match="combine"):
        reliability.fit(train, train_labels, held, 0.3, {}, blocks=blocks, combine="mean")


def texture_of(image) -> np.ndarray:
    """texture_statistics() of one grey image given as the model's 3-channel input."""
    import torch

    grey = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None].repeat(1, 3, 1, 1)
    return features.texture_statistics(grey)[0].numpy()


def texture_share(image, column: int) -> float:
    """A share column of texture_of() (stored as log(share + 1e-3)) back as a share."""
    return float(np.exp(texture_of(image)[column]) - 1e-3)


def with_noise(image, seed: int, sigma: float, inside) -> np.ndarray:
    return np.clip(image + np.random.default_rng(seed).normal(0, sigma, image.shape), 0, 1) * inside


def test_texture_statistics_see_blur_and_noise_inside_the_head_whatever_its_brightness():
    import cv2

    head = head_phantom(256, seed=5)
    fine = 2  # log energy of the finest band relative to the variance
    clean = texture_of(head)
    assert clean.shape == (reliability.TEXTURE_SIZE,)
    assert texture_of(cv2.GaussianBlur(head, (0, 0), 1.5))[fine] < clean[fine] - 1
    noisy = np.clip(head + np.random.default_rng(6).normal(0, 0.08, head.shape), 0, 1) * (head > 0)
    assert texture_of(noisy)[fine] > clean[fine] + 1
    # Brightness and contrast change the first two statistics, not the band shapes.
    assert np.allclose(texture_of(head * 0.5)[fine:], clean[fine:], atol=0.01)


def test_the_flat_share_rises_with_heavy_jpeg_and_not_with_noise_or_16_bit_smoothness():
    import cv2
    import torch

    def flat_share(image):
        return texture_share(image, -4)  # the flat share: before the linear share and the two slopes

    head = head_phantom(256, seed=7)
    inside = head > 0
    scan = with_noise(head, 8, 0.02, inside)
    eight_bit = np.round(scan * 255) / 255
    _, encoded = cv2.imencode(".jpg", np.uint8(eight_bit * 255), [cv2.IMWRITE_JPEG_QUALITY, 8])
    jpeg = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255 * inside
    noisier = with_noise(scan, 9, 0.05, inside)
    assert flat_share(jpeg) > 0.2 > 0.05 > flat_share(eight_bit)
    assert flat_share(noisier) <= flat_share(eight_bit)
    assert abs(flat_share(scan) - flat_share(eight_bit)) < 0.005  # a float (or 16-bit) scan: as flat as its 8-bit copy
    # By hand: a constant 4x4 patch in a ramp is flat where both neighbours are equal.
    ramp = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6) / 35
    ramp[..., 1:5, 1:5] = 0.5
    assert features.flat_pixels(ramp)[0, 0, 1:4, 1:4].all() and features.flat_pixels(ramp).sum() == 9


def test_the_linear_share_rises_when_a_slice_was_enlarged_and_not_with_noise():
    import cv2
    import torch

    def linear_share(image):
        return texture_share(image, -3)  # the linear share: before the two slopes

    head = head_phantom(256, seed=12)
    inside = head > 0
    scan = with_noise(head, 13, 0.02, inside)
    small = cv2.resize(scan, (64, 64), interpolation=cv2.INTER_AREA)
    enlarged = cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR) * inside
    noisier = with_noise(scan, 14, 0.05, inside)
    assert linear_share(enlarged) > 0.1 > 0.02 > linear_share(scan) >= linear_share(noisier)
    # By hand: a ramp is linear everywhere inside; its border pixels (no two neighbours) are not.
    ramp = torch.arange(6, dtype=torch.float32).repeat(6, 1).reshape(1, 1, 6, 6) / 5
    assert features.linear_pixels(ramp)[0, 0, 1:5, 1:5].all() and features.linear_pixels(ramp).sum() == 16


def test_feature_blocks_leave_the_texture_or_a_tail_of_its_columns_out():
    size = 64 + reliability.TEXTURE_SIZE
    assert reliability.feature_blocks(size) == [(0, 64), (64, size)]
    assert reliability.feature_blocks(size, flatness=False) == [(0, 64), (64, size - 4)]
    assert reliability.feature_blocks(size, linear=False) == [(0, 64), (64, size - 3)]
    assert reliability.feature_blocks(size, tilt=False) == [(0, 64), (64, size - 2)]
    assert reliability.feature_blocks(size, texture=False) == [(0, 64)]


def test_the_intensity_tilt_sees_a_bias_field_not_brightness_or_a_level_head():
    head = head_phantom(256, seed=5)
    inside = head > 0
    x = np.linspace(-1, 1, 256)[None, :].repeat(256, 0)
    level = texture_of(head)[-2:]
    assert np.abs(level).max() < 0.1  # the phantom is level: no tilt either way
    assert np.allclose(texture_of(head * 0.5)[-2:], level, atol=1e-4)  # brightness alone tilts nothing
    rightwards = texture_of(head * np.exp(0.6 * x) * inside)[-2:]
    leftwards = texture_of(head * np.exp(-0.6 * x) * inside)[-2:]
    downwards = texture_of(head * np.exp(0.6 * x.T) * inside)[-2:]
    assert rightwards[0] > level[0] + 0.3 and leftwards[0] < level[0] - 0.3 and abs(rightwards[1] - level[1]) < 0.1
    assert downwards[1] > level[1] + 0.3 and abs(downwards[0] - level[0]) < 0.1


def test_an_unfamiliar_slice_says_which_block_is_unusual():
    rng = np.random.default_rng(11)
    train, train_labels = rng.normal(size=(600, 6)), rng.integers(0, 2, 600)
    held = rng.normal(size=(200, 6))
    trust = reliability.fit(train, train_labels, held, 0.3, {}, blocks=[(0, 4), (4, 6)])
    probes = np.zeros((4, 6))
    probes[1, :4] = 8  # what the model sees is off
    probes[2, 4:] = 8  # the texture is off
    probes[3] = 8
    assert trust.unusual(probes) == [(), ("content",), ("texture",), ("content", "texture")]
    assert reliability.fit(train, train_labels, held, 0.3, {}).unusual(probes) == [()] * 4  # one block: no split

    familiarity = trust.familiarity(probes)
    told = [reliability.verdict(np.array([0.9, 0.1]), f, trust, u) for f, u in zip(familiarity, trust.unusual(probes))]
    assert told[0].unusual_text() == "" and not told[0].unfamiliar
    assert told[2].unfamiliar and told[2].unusual_text().startswith("Unusual: its image texture")
    assert "what the model sees" in told[3].unusual_text() and "image texture" in told[3].unusual_text()


def test_saved_without_pickle_and_read_back_the_same(tmp_path):
    trust = fitted(np.random.default_rng(1))
    path = reliability.save(trust, tmp_path)
    assert path.name == "reliability.safetensors" and b"pickle" not in path.read_bytes()[:200]
    back = reliability.load(tmp_path)
    assert (
        np.allclose(back.means, trust.means)
        and back.margin == trust.margin
        and back.info == trust.info
        and trust.info["note"] == "test"
    )
    assert reliability.load(tmp_path / "nowhere") is None
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged"):
        reliability.load(tmp_path)


def test_the_margin_is_the_smallest_lead_that_reaches_the_selective_accuracy():
    rng = np.random.default_rng(2)
    lead = rng.uniform(0, 1, 2000)
    probabilities = np.stack([(1 + lead) / 2, (1 - lead) / 2, np.zeros_like(lead), np.zeros_like(lead)], 1)
    labels = np.where(rng.uniform(size=2000) < 0.5 + lead / 2, 0, 1)  # right more often with a bigger lead
    chosen = choose_margin(probabilities, labels, target=0.9)
    kept = lead >= chosen["margin"]
    assert (probabilities.argmax(1)[kept] == labels[kept]).mean() >= 0.9
    smaller = lead >= chosen["margin"] - 0.01
    assert (probabilities.argmax(1)[smaller] == labels[smaller]).mean() < 0.9
    assert chosen["coverage"] == pytest.approx(kept.mean())


def test_a_near_tie_is_uncertain_and_says_both_classes():
    probabilities = np.array([0.478, 0.412, 0.06, 0.05])
    tie = verdict(probabilities, familiarity=0.4, reliability=None)
    assert tie.uncertain and not tie.unfamiliar and tie.runner_up == 1
    assert uncertain_text(probabilities, LABELS, 0, 1) == "uncertain: glioma 48% or meningioma 41%"
    clear = verdict(np.array([0.9, 0.05, 0.03, 0.02]), familiarity=0.01, reliability=None)
    assert not clear.uncertain and clear.unfamiliar
    assert clear.fields() == {"familiarity": 0.01, "unfamiliar": True, "unusual": [], "uncertain": False}
    assert DEFAULT_MARGIN == 0.2


def test_an_uncertain_prediction_says_why_in_words_true_at_any_lead():
    """A wide fitted margin makes 80 % against 8 % uncertain: that is no near-tie, and the reason
    given must be the lead against the margin, not 'too close to call'."""
    wide = Reliability(np.zeros((4, 2)), np.eye(2), np.arange(20.0), margin=0.79)
    probabilities = np.array([0.08, 0.02, 0.10, 0.80])
    shown = verdict(probabilities, familiarity=0.4, reliability=wide)
    assert shown.uncertain and shown.runner_up == 2
    reason = shown.uncertain_reason(probabilities, LABELS)
    assert "pituitary leads notumor by 70 points" in reason and "79" in reason and "95 %" in reason
    assert "close" not in reason
    tie = np.array([0.478, 0.412, 0.06, 0.05])
    assert "too close to call" in verdict(tie, familiarity=0.4, reliability=wide).uncertain_reason(tie, LABELS)
    unfitted = verdict(tie, familiarity=None, reliability=None).uncertain_reason(tie, LABELS)
    assert "20 points" in unfitted and "no fitted margin" in unfitted
    clear = np.array([0.97, 0.01, 0.01, 0.01])
    assert verdict(clear, familiarity=0.4, reliability=wide).uncertain_reason(clear, LABELS) == ""


def test_a_checkpoint_carries_its_reliability_into_every_explanation(tmp_path):
    directory = make_tiny_checkpoint(tmp_path / "tiny", "tf_efficientnet_lite0", "conv_head")
    loaded = load_checkpoint(directory)
    assert loaded.reliability is None and explain(loaded, head_phantom(96)).summary()["familiarity"] is None

    rng = np.random.default_rng(3)
    size = features.feature_size(loaded.model, 64)  # pre-logits plus an early stage's channel statistics
    reliability.save(fitted(rng, size=size, margin=1.01), directory)  # every prediction a near-tie
    loaded = load_checkpoint(directory)
    result = explain(loaded, head_phantom(96))
    summary = result.summary()
    assert 0 <= summary["familiarity"] <= 1 and summary["uncertain"] is True
    assert "points, under the 101 points from which" in summary["uncertain_reason"]
    assert result.headline().startswith("uncertain: ")

    reliability.save(fitted(rng, size=16), directory)  # fitted for another feature size
    with pytest.raises(CheckpointError, match="other weights"):
        load_checkpoint(directory)


def test_weights_refit_on_the_holdout_take_their_twins_margin_and_nothing_else(tmp_path, capsys):
    from dataclasses import replace

    from core.cli import main
    from core.config import read_config, write_config

    twin = make_tiny_checkpoint(tmp_path / "twin", "convnext_atto", "stages.3")
    refit = make_tiny_checkpoint(tmp_path / "refit", "convnext_atto", "stages.3", seed=1)
    write_config(refit, replace(read_config(refit), refit_without_holdout=True))
    rng = np.random.default_rng(4)
    info = {"coverage": 0.64, "selective_accuracy": 0.952, "holdout": "grouped 15 % of train+val, seed 0"}
    reliability.save(reliability.fit(*gaussian_features(rng, 400), gaussian_features(rng, 100)[0], 0.79, info), twin)

    chosen = reliability.twin_margin(refit, twin)
    assert chosen["margin"] == pytest.approx(0.79) and chosen["selective_accuracy"] == 0.952
    assert chosen["margin_from"] == {"checkpoint": str(twin), "holdout": info["holdout"]}

    with pytest.raises(CheckpointError, match="kept its own hold-out"):
        reliability.twin_margin(twin, twin)
    with pytest.raises(CheckpointError, match="held nothing out"):
        reliability.twin_margin(refit, refit)
    other = make_tiny_checkpoint(tmp_path / "other", "tf_efficientnet_lite0", "conv_head")
    with pytest.raises(CheckpointError, match="is a tf_efficientnet_lite0"):
        reliability.twin_margin(refit, other)
    write_config(refit, replace(read_config(refit), temperature=0.9))
    with pytest.raises(CheckpointError, match="calibrated probabilities"):
        reliability.twin_margin(refit, twin)
    write_config(refit, replace(read_config(refit), temperature=read_config(twin).temperature))
    (twin / reliability.RELIABILITY_FILE).unlink()
    with pytest.raises(CheckpointError, match="fit it first"):
        reliability.twin_margin(refit, twin)

    # Fitting a refit's own margin is refused before any data is read.
    assert main(["reliability", "--checkpoint", str(refit), "--data", str(tmp_path / "nowhere")]) == 2
    assert "--margin-from TWIN" in capsys.readouterr().err


SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


def non_brain_images() -> dict[str, np.ndarray]:
    """Images that are not brain MRI, from data pip installs (scikit-image, pydicom)."""
    import skimage.data
    from pydicom.data import get_testdata_file

    pictures = {
        "photo (astronaut)": skimage.data.astronaut(),
        "photo (coffee)": skimage.data.coffee(),
        "grey photo (camera)": skimage.data.camera(),
        "document (text)": skimage.data.text(),
    }
    images = {
        name: load_image(encode(Image.fromarray(picture), "PNG"), f"{name}.png").pixels
        for name, picture in pictures.items()
    }
    for name, file in (("chest CT", "CT_small.dcm"), ("cardiac ultrasound", "examples_ybr_color.dcm")):
        path = Path(get_testdata_file(file))
        images[name] = load_image(path.read_bytes(), path.name).pixels
    return images


@pytest.mark.parametrize("name", ["efficientnet_lite0", "convnext_atto"])
def test_images_that_are_not_brain_mri_come_out_unfamiliar_to_the_shipped_models(name):
    loaded = load_checkpoint(SHIPPED / name)
    assert loaded.reliability is not None, f"{name} ships without reliability.safetensors"
    images = non_brain_images()
    _, features = slice_scores(loaded, list(images.values()))
    familiarity = dict(zip(images, loaded.reliability.familiarity(features).round(3)))
    assert all(score < 0.05 for score in familiarity.values()), familiarity


@pytest.mark.parametrize("name", ["efficientnet_lite0", "convnext_atto"])
def test_healthy_slices_from_another_source_are_never_shown_as_a_trusted_tumour(name):
    """Healthy coronal and sagittal slices from another source (nilearn's MNI152 template, 4 mm
    from the slices the EfficientNet trained on): the view shortcut makes the ConvNeXt call most
    sagittal ones pituitary. Whatever a model calls them, no tumour may be shown as confident
    and familiar."""
    from nilearn.datasets import load_mni152_template

    from core.inference import judged_scores
    from core.training.data import TEMPLATE_RANGES, TEMPLATE_STEP

    volume = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    slices = []
    for axis, plane in ((0, "sagittal"), (1, "coronal")):  # halfway between the template's training slices
        low, high = (int(share * volume.shape[axis]) for share in TEMPLATE_RANGES[plane])
        indices = range(low + TEMPLATE_STEP // 2, high, TEMPLATE_STEP)
        slices += [np.ascontiguousarray(np.rot90(np.take(volume, index, axis=axis))) for index in indices]
    loaded = load_checkpoint(SHIPPED / name)
    _, probabilities, verdicts = judged_scores(loaded, slices)
    labels = loaded.config.label_names
    trusted_tumours = [labels[int(p.argmax())] for p, v in zip(probabilities, verdicts)
                       if labels[int(p.argmax())] != "notumor" and not (v.uncertain or v.unfamiliar)]  # fmt: skip
    assert not trusted_tumours, trusted_tumours


@needs_data
@pytest.mark.parametrize("name", ["efficientnet_lite0", "convnext_atto"])
def test_thumbnails_enlarged_for_the_model_come_out_unfamiliar_to_the_shipped_models(name):
    """Slices under 32 pixels a side are read (with a note), not refused; what the model makes
    of the enlarged copy must not be shown as a familiar, trusted result, though the same
    slices at full size are familiar."""
    from pydicom.data import get_testdata_file

    from core.dataset import list_split

    loaded = load_checkpoint(SHIPPED / name)
    records = list_split(SHARED_DATA, "val", list(loaded.config.label_names))[::50]
    slices = [load_image((SHARED_DATA / r.image).read_bytes(), r.image).pixels for r in records]
    full_size = loaded.reliability.familiarity(slice_scores(loaded, slices)[1])
    familiar = [image for image, score in zip(slices, full_size) if score >= 0.05]
    assert len(familiar) >= 0.8 * len(slices), full_size.round(3)
    thumbnails = [cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
                  for image in familiar[:6] for side in (8, 16, 31)]  # fmt: skip
    for file in ("rtdose.dcm", "SC_rgb_small_odd.dcm", "JPEGLSNearLossless_08.dcm"):
        path = Path(get_testdata_file(file))
        thumbnails.append(load_image(path.read_bytes(), path.name).pixels)
    familiarity = loaded.reliability.familiarity(slice_scores(loaded, thumbnails)[1])
    assert (familiarity < 0.05).all(), familiarity.round(3)


@needs_data
def test_the_shipped_convnext_finds_slices_at_a_quarter_of_their_resolution_less_familiar():
    """The texture block's purpose: the ConvNeXt's own features barely see resolution loss."""
    from core.dataset import list_split
    from core.stress import SHIFTS, shifted

    loaded = load_checkpoint(SHIPPED / "convnext_atto")
    assert len(loaded.reliability.info["feature_blocks"]) == 2  # model features and texture
    records = list_split(SHARED_DATA, "test", list(loaded.config.label_names))[::64]
    images = [load_image((SHARED_DATA / r.image).read_bytes(), r.image).pixels for r in records]
    resolution = next(shift for shift in SHIFTS if shift.name == "resolution")
    blurred = [shifted(image, resolution, 2, seed) for seed, image in enumerate(images)]
    clean_score = loaded.reliability.familiarity(slice_scores(loaded, images)[1])
    blurred_score = loaded.reliability.familiarity(slice_scores(loaded, blurred)[1])
    assert (blurred_score < clean_score).mean() >= 0.75 and blurred_score.mean() < clean_score.mean() - 0.15
