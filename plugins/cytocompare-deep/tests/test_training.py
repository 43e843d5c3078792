"""Training, prediction, checkpoint/resume and pickling on tiny synthetic images (CPU, seconds)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cytocompare.images import ImageSet
from cytocompare_deep import loading, training
from cytocompare_deep.classifier import ResNeXt50Classifier, SequentialCNNClassifier

COLOURS = {"c_red": (200, 40, 40), "a_green": (40, 200, 40), "b_blue": (40, 40, 200)}


def blobs(n_per_class: int = 20, size: int = 32, seed: int = 0) -> tuple[ImageSet, np.ndarray]:
    """Dark noisy background with one coloured disc; the colour is the class."""
    rng = np.random.RandomState(seed)
    arrays, labels = [], []
    yy, xx = np.mgrid[:size, :size]
    for label, colour in COLOURS.items():
        for _ in range(n_per_class):
            a = rng.randint(0, 60, (size, size, 3)).astype(np.uint8)
            cy, cx = rng.randint(size // 3, 2 * size // 3, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.randint(size // 2, size * 3 // 2)
            a[disc] = np.clip(np.array(colour) + rng.randint(-20, 20, 3), 0, 255)
            arrays.append(a)
            labels.append(label)
    order = rng.permutation(len(labels))  # interleave classes: labels are not given sorted
    labels = np.asarray(labels)[order]
    return ImageSet.from_arrays([arrays[i] for i in order], labels), labels


TINY = dict(input_size=32, device="cpu", augment=False, progress=False, num_workers=0)


def tiny(cls=SequentialCNNClassifier, **kw):
    params = {**TINY, "epochs": 2, "samples_per_class": 32, "batch_size": 16, "lr": 0.05, **kw}
    if cls is ResNeXt50Classifier:
        params.setdefault("width", "tiny")
    return cls(**params)


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.mark.parametrize("cls", [SequentialCNNClassifier, ResNeXt50Classifier])
def test_learns_above_chance_and_proba_follows_classes(cls, data):
    images, y = data
    clf = tiny(cls, epochs=3).fit(images, y)
    assert list(clf.classes_) == sorted(COLOURS)
    proba = clf.predict_proba(images)
    assert proba.shape == (len(y), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    pred = clf.predict(images)
    assert np.array_equal(pred, clf.classes_[proba.argmax(axis=1)].astype(str))
    acc = float((pred == y).mean())
    assert acc > 0.6, f"{cls.__name__} accuracy {acc:.2f} (chance 0.33)"
    # per-class mean probability is highest in that class's own column
    for k, c in enumerate(clf.classes_):
        assert proba[y == c].mean(axis=0).argmax() == k
    assert clf.embed(images[:5]).shape[0] == 5
    assert len(clf.history_) == 3 and clf.mean_.shape == (3,)


def test_epoch_indices_are_class_balanced_and_pure():
    y = np.array([0] * 50 + [1] * 5 + [2] * 1)
    idx = training.epoch_indices(y, 3, 40, seed=1, epoch=0)
    assert np.bincount(y[idx], minlength=3).tolist() == [40, 40, 40]
    assert np.array_equal(idx, training.epoch_indices(y, 3, 40, seed=1, epoch=0))
    assert not np.array_equal(idx, training.epoch_indices(y, 3, 40, seed=1, epoch=1))
    plain = training.epoch_indices(y, 3, None, seed=1, epoch=0)
    assert sorted(plain.tolist()) == list(range(len(y)))


class _Crash(RuntimeError):
    pass


def _raise_after_first(epoch: int) -> None:
    if epoch == 1:
        raise _Crash("simulated crash after epoch 1")


@pytest.mark.parametrize("cls", [SequentialCNNClassifier, ResNeXt50Classifier])
def test_resume_after_crash_is_identical_to_uninterrupted(cls, data, tmp_path):
    images, y = data
    params = dict(epochs=2, deterministic=True, samples_per_class=24, batch_size=12, augment=True)
    full = tiny(cls, checkpoint_dir=str(tmp_path / "full"), **params).fit(images, y)

    first = tiny(cls, checkpoint_dir=str(tmp_path / "crash"), **params)
    first._on_epoch_end = _raise_after_first
    with pytest.raises(_Crash):
        first.fit(images, y)
    ckpt = training.load_checkpoint(tmp_path / "crash" / training.CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1
    resumed = tiny(cls, checkpoint_dir=str(tmp_path / "crash"), **params).fit(images, y)

    a, b = full.model_.state_dict(), resumed.model_.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert np.array_equal(full.predict_proba(images), resumed.predict_proba(images))
    assert [h["loss"] for h in full.history_] == [h["loss"] for h in resumed.history_]


def test_finished_checkpoint_is_reused_and_other_data_refused(data, tmp_path):
    images, y = data
    clf = tiny(checkpoint_dir=str(tmp_path)).fit(images, y)
    again = tiny(checkpoint_dir=str(tmp_path)).fit(images, y)  # loads, trains nothing
    assert np.array_equal(clf.predict_proba(images), again.predict_proba(images))
    with pytest.raises(training.CheckpointError, match="another training set"):
        tiny(checkpoint_dir=str(tmp_path)).fit(images[:30], y[:30])
    fresh = tiny(checkpoint_dir=str(tmp_path), resume=False).fit(images[:30], y[:30])
    assert fresh.history_[0]["epoch"] == 1


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_loads_weights_only_and_refuses_pickled_objects(data, tmp_path):
    images, y = data
    tiny(checkpoint_dir=str(tmp_path / "ok"), epochs=1).fit(images, y)
    state = training.load_checkpoint(tmp_path / "ok" / "last.pt")
    assert state["classes"] == sorted(COLOURS) and state["epoch"] == 1
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    # the same file through plain torch.load(weights_only=True) works too
    torch.load(tmp_path / "ok" / "last.pt", weights_only=True)

    marker = tmp_path / "pwned"
    bad = dict(state, evil=_Evil(marker))
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(training.CheckpointError, match="refused"):
        training.load_checkpoint(tmp_path / "bad.pt")
    assert not marker.exists()


def test_pickle_roundtrip_keeps_predictions(data):
    images, y = data
    clf = tiny(epochs=1).fit(images, y)
    clone = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(clf.predict_proba(images), clone.predict_proba(images))
    assert list(clone.classes_) == list(clf.classes_)


def test_streaming_path_and_bf16_on_cpu(data, monkeypatch):
    images, y = data
    monkeypatch.setattr(loading, "fits_on_device", lambda *a, **k: False)
    clf = tiny(epochs=1, precision="bf16", channels_last=True).fit(images, y)
    assert np.isfinite(clf.history_[0]["loss"])
    assert clf.predict_proba(images).dtype == np.float32
    with pytest.raises(ValueError, match="fp16"):
        tiny(precision="fp16").fit(images, y)


def test_not_fitted_and_bad_input(data):
    from cytocompare.errors import NotFittedError

    images, y = data
    with pytest.raises(NotFittedError):
        tiny().predict(images)
    with pytest.raises(ValueError, match="2 classes"):
        tiny().fit(images, np.array(["x"] * len(images)))


def test_jpeg_files_decode_and_resize(tmp_path):
    from PIL import Image

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(p, quality=95)
        paths.append(p)
    images = ImageSet(paths, ["a", "b", "c"])
    batch = loading.load_all(images, 32, torch.device("cpu"), batch_size=2, num_workers=1)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.uint8
    assert abs(int(batch[2].float().mean()) - 120) <= 2


def test_training_with_augmentation(data):
    images, y = data
    clf = tiny(epochs=1, augment=True).fit(images, y)
    assert np.isfinite(clf.history_[0]["loss"])


@pytest.mark.gpu
def test_cuda_nvjpeg_decode_matches_pil_and_bf16_training(tmp_path):
    assert torch.cuda.is_available(), "--run-gpu was given, but torch sees no CUDA device"
    from PIL import Image

    rng = np.random.RandomState(0)
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.randint(0, 255, (48, 48, 3), dtype=np.uint8)).save(p, quality=95)
        paths.append(p)
    images = ImageSet(paths, ["a", "b", "a", "b"])
    gpu = loading.load_all(images, 48, torch.device("cuda")).cpu().int()
    cpu = loading.load_all(images, 48, torch.device("cpu")).int()
    assert (gpu - cpu).abs().float().mean() < 3  # nvJPEG and libjpeg differ by rounding only
    imgs, y = blobs()
    clf = tiny(ResNeXt50Classifier, device="cuda", precision="bf16").fit(imgs, y)
    assert np.isfinite(clf.history_[-1]["loss"])


@pytest.mark.slow  # ~60 s on 2 cores: UMAP's numba compilation
def test_write_artifacts_smoothgrad_gradcam_umap(data, tmp_path):
    # the optional ``explain`` extra: without it only this test skips
    pytest.importorskip("captum")
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("umap")
    images, y = data
    clf = tiny(ResNeXt50Classifier, epochs=1).fit(images, y)
    paths = clf.write_artifacts(tmp_path, images, y)  # default: one row per class
    for p in paths:
        assert p.exists() and p.stat().st_size > 0, p
    assert {p.name for p in paths} >= {"explanations_correct.png", "misclassified_gallery.png", "umap.png",
                                       "explanations_index.json"}


def test_matched_test_sets_are_decoded_by_the_image_set_not_from_the_files(tmp_path):
    """A rescaled, cropped or colour-mapped set (an external test set after cytocompare.matching)
    never goes to nvJPEG, which would read the files as they are; and what it gives is the set's
    own decoded (rescaled, colour-mapped) images."""
    from PIL import Image

    from cytocompare.colour import ColourMap, LabStats

    p = tmp_path / "0.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
    cuda = torch.device("cuda")
    assert loading.decodes_files_on_gpu(ImageSet([p], ["a"]), cuda)
    assert not loading.decodes_files_on_gpu(ImageSet([p], ["a"]), torch.device("cpu"))
    darker = ColourMap(LabStats((60.0, 0.0, 0.0), (10.0, 5.0, 5.0)), LabStats((40.0, 0.0, 0.0), (10.0, 5.0, 5.0)))
    matched = [ImageSet([p], ["a"], scale=1.5), ImageSet([p], ["a"], crop=(32, 32)),
               ImageSet([p], ["a"], colour_map=darker),
               ImageSet([p], ["a"], scale=1.5, crop=(40, 40), colour_map=darker)]
    for images in matched:
        assert not loading.decodes_files_on_gpu(images, cuda)
        expected = torch.from_numpy(np.ascontiguousarray(images[0])).permute(2, 0, 1)
        got = loading.load_all(images, images[0].shape[0], torch.device("cpu"))[0]
        assert torch.equal(got, expected)


def test_batched_bytes_decoder_matches_pil_on_the_cpu(tmp_path):
    """The nvJPEG path's own logic (JPEG/PNG split, batched decode_jpeg, resize, order) run with
    torchvision's CPU decoder, so CI covers everything but the CUDA kernel itself."""
    from PIL import Image

    rng = np.random.RandomState(1)
    paths = []
    for i, ext in enumerate(["jpg", "png", "jpg", "png", "jpg"]):
        p = tmp_path / f"{i}.{ext}"
        size = 40 if i == 2 else 48  # one odd size: must be resized like the PIL path does
        Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)).save(p, quality=95)
        paths.append(p)
    images = ImageSet(paths, ["a", "b", "a", "b", "a"])
    encoded = [torch.frombuffer(bytearray(images.read_bytes(i)), dtype=torch.uint8) for i in range(len(images))]
    batched = loading.decode_bytes_cuda(encoded, 48, torch.device("cpu")).int()
    pil = loading.load_all(images, 48, torch.device("cpu")).int()
    assert batched.shape == pil.shape == (5, 3, 48, 48)
    for i in range(5):  # order kept; libjpeg builds differ by rounding only, PNG is exact
        diff = (batched[i] - pil[i]).abs().float().mean()
        assert diff < (1e-9 if paths[i].suffix == ".png" else 3), (paths[i], float(diff))


@pytest.mark.slow  # torch.compile's first compilation takes ~1 min on 2 cores
def test_compiled_training_checkpoints_the_plain_model(data, tmp_path):
    """compile=True trains through the torch.compile wrapper, but checkpoints and pickles hold the
    plain model's weights (no ``_orig_mod.`` prefixes), so a compiled run resumes uncompiled."""
    images, y = data
    clf = tiny(epochs=1, compile=True, checkpoint_dir=str(tmp_path)).fit(images, y)
    assert np.isfinite(clf.history_[0]["loss"])
    state = training.load_checkpoint(tmp_path / training.CHECKPOINT_NAME)
    assert not any(k.startswith("_orig_mod.") for k in state["model"])
    again = tiny(epochs=1, compile=False, checkpoint_dir=str(tmp_path)).fit(images, y)  # finished: loads only
    np.testing.assert_allclose(again.predict_proba(images), clf.predict_proba(images), atol=1e-5)


# --------------------------------------------------------------------------- the loop's named steps


def _setup(**kw) -> training.TrainSetup:
    base = dict(
        name="sequential-cnn", epochs=3, samples_per_class=10, batch_size=8, lr=0.05, optimizer="sgd", momentum=0.9,
        weight_decay=0.0, label_smoothing=0.0, warmup_epochs=0.5, device=torch.device("cpu"), amp_dtype=None,
        channels_last=False, compile=False, augment=None, random_state=3, deterministic=True, progress=False,
        checkpoint_dir=None, resume=False, fingerprint="f", classes=["a", "b", "c"], params={},
    )
    return training.TrainSetup(**{**base, **kw})


def test_plan_epochs_drops_the_last_partial_batch():
    y = np.array([0, 1, 2] * 5)
    plan = training.plan_epochs(y, _setup())  # 3 classes x 10 draws = 30 rows, batches of 8
    assert (plan.batch_size, plan.steps, plan.total_steps, plan.warmup_steps) == (8, 3, 9, 2)
    small = training.plan_epochs(y, _setup(samples_per_class=None, batch_size=64))  # 15 rows < one batch
    assert (small.batch_size, small.steps) == (15, 1)


@pytest.mark.parametrize("fits", [True, False])
def test_training_images_decides_once_between_resident_and_streamed(data, monkeypatch, fits):
    images, _ = data
    monkeypatch.setattr(loading, "fits_on_device", lambda *a, **k: fits)
    source, mean, std = loading.training_images(images, 32, torch.device("cpu"), num_workers=0, seed=0)
    assert source.resident is fits
    assert isinstance(source, loading.ResidentImages if fits else loading.StreamedImages)
    order = np.array([5, 0, 59, 5, 17, 3, 8])
    batches = list(source.batches(order, 3))  # 2 full batches, the partial one is not served
    expected = loading.load_all(images.subset(order[:6]), 32, torch.device("cpu"))
    assert torch.equal(torch.cat(batches), expected)
    # the normalisation sample (here the whole, small set either way) gives the same statistics
    all_stats = loading.channel_stats(loading.load_all(images, 32, torch.device("cpu")))
    np.testing.assert_allclose(mean, all_stats[0], rtol=1e-12)
    np.testing.assert_allclose(std, all_stats[1], rtol=1e-12)


class _RecordingSource:
    """A resident source that remembers the row order it was asked for."""

    def __init__(self, data: torch.Tensor) -> None:
        self.inner = loading.ResidentImages(data)
        self.orders: list[np.ndarray] = []
        self.resident = True

    def batches(self, order, batch_size):
        self.orders.append(np.asarray(order).copy())
        return self.inner.batches(order, batch_size)


def test_labels_untouched_through_a_training_step(data):
    """Through real training steps (with augmentation), the loss gets exactly the labels of the rows
    whose images the augmentation received: a loop that paired images and labels from different
    orders, shifted a batch, or let the augmentation reorder samples would fail here."""
    from cytocompare_deep import models
    from cytocompare_deep.augment import BatchAugment

    images, y_str = data
    classes = sorted(set(y_str))
    y = np.searchsorted(classes, y_str)
    u8 = loading.load_all(images, 32, torch.device("cpu"))
    aug_inputs: list[torch.Tensor] = []
    real_aug = BatchAugment(stain="hed")

    def recording_augment(x, generator=None):
        aug_inputs.append(x.clone())
        return real_aug(x, generator=generator)

    setup = _setup(classes=classes, augment=recording_augment, samples_per_class=12)
    plan = training.plan_epochs(y, setup)
    torch.manual_seed(0)
    stepper = training.Stepper(models.build("sequential-cnn", 3), setup, plan.total_steps, plan.warmup_steps)
    loss_labels: list[torch.Tensor] = []
    real_loss = stepper.loss_fn
    stepper.loss_fn = lambda logits, target: (loss_labels.append(target.clone()), real_loss(logits, target))[1]
    source = _RecordingSource(u8)
    ones, zeros = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    for epoch in range(2):
        training.run_epoch(stepper, source, y, torch.as_tensor(y), epoch, plan, zeros, ones,
                           torch.Generator().manual_seed(1))
    assert len(source.orders) == 2 and len(loss_labels) == len(aug_inputs) == 2 * plan.steps
    bs = plan.batch_size
    for e, order in enumerate(source.orders):
        assert np.array_equal(order, training.epoch_indices(y, 3, 12, setup.random_state, e)[: plan.steps * bs])
        for s in range(plan.steps):
            rows = order[s * bs : (s + 1) * bs]
            k = e * plan.steps + s
            assert torch.equal(aug_inputs[k], u8[torch.as_tensor(rows)].float() / 255), (e, s)
            assert torch.equal(loss_labels[k], torch.as_tensor(y[rows])), (e, s)
    assert not np.array_equal(source.orders[0], source.orders[1])  # each epoch draws afresh
