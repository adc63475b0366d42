"""Views, Cutout, MultiView, batch mixing, and the batched views (BatchCropFlip, ...)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from nclt.data.views import (
    BATCH_VIEWS,
    VIEWS,
    BatchCropFlip,
    BatchRandAugment,
    Cutout,
    MultiView,
    batch_mix,
    build_batch_view,
    build_view,
)
from nclt.errors import ConfigError


def _image(seed: int = 0, shape: tuple[int, ...] = (3, 32, 32)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


CIFAR_VIEWS = ["none", "crop_flip", "autoaugment", "randaugment", "cutout",
               "autoaugment_cutout", "simclr"]  # fmt: skip


@pytest.mark.parametrize("name", CIFAR_VIEWS)
def test_cifar_views_keep_uint8_and_shape(name: str) -> None:
    torch.manual_seed(0)
    view = build_view(name)
    for seed in range(3):
        out = view(_image(seed))
        assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
        assert out.shape == (3, 32, 32)


def test_every_registered_view_is_covered() -> None:
    assert set(VIEWS.names()) == {*CIFAR_VIEWS, "rrc_flip", "center_crop"}


def test_imagenet_views_fix_the_size() -> None:
    img = _image(0, (3, 60, 45))
    assert build_view("rrc_flip")(img).shape == (3, 224, 224)
    out = build_view("center_crop")(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    assert build_view("center_crop", image_size=16)(img).shape == (3, 16, 16)
    assert build_view("randaugment", base="rrc_flip", image_size=24)(img).shape == (3, 24, 24)


def test_none_is_identity_and_options() -> None:
    img = _image()
    assert torch.equal(build_view("none")(img), img)
    small = _image(1, (1, 8, 8))
    assert build_view("crop_flip", image_size=8, padding=1, flip=False)(small).shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="crop_flip"):
        build_view("crop_flp")
    with pytest.raises(ConfigError, match="unknown view option"):
        build_view("crop_flip", paddding=2)
    with pytest.raises(ConfigError, match="does not take"):
        build_view("crop_flip", n=3)


def test_cutout_zeroes_a_clipped_square() -> None:
    torch.manual_seed(0)
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    areas = set()
    for _ in range(200):
        out = Cutout(16)(img)
        zero = (out == 0).all(0)
        assert (out[:, ~zero] == 200).all()  # nothing else changed
        ys, xs = torch.nonzero(zero, as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert int(zero.sum()) == h * w and 8 <= h <= 16 and 8 <= w <= 16
        areas.add(h * w)
    assert 256 in areas and min(areas) < 256  # whole squares and border-clipped ones
    assert torch.equal(img, torch.full((3, 32, 32), 200, dtype=torch.uint8))  # input untouched
    with_cutout = build_view("crop_flip", cutout=True)
    assert any(isinstance(t, Cutout) for t in with_cutout.transforms)


def test_multiview_gives_distinct_views() -> None:
    torch.manual_seed(0)
    mv = MultiView([build_view("simclr"), build_view("simclr"), build_view("crop_flip")])
    out = mv(_image())
    assert isinstance(out, tuple) and len(out) == 3 == len(mv)
    assert all(o.dtype == torch.uint8 and o.shape == (3, 32, 32) for o in out)
    assert not torch.equal(out[0], out[1])
    with pytest.raises(ConfigError):
        MultiView([])


def _indexed_batch(B: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i is the constant image i, label i: a mixed pixel tells its sources."""
    images = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, 16, 16).clone()
    return images, torch.arange(B)


def test_mixup_formula_and_labels() -> None:
    images, labels = _indexed_batch()
    g = torch.Generator().manual_seed(0)
    mixed, ya, yb, lam = batch_mix(images, labels, "mixup", alpha=1.0, generator=g)
    assert isinstance(lam, float) and 0.0 <= lam <= 1.0
    assert torch.equal(ya, labels) and sorted(yb.tolist()) == labels.tolist()
    expected = lam * labels.float() + (1 - lam) * yb.float()
    torch.testing.assert_close(mixed[:, 0, 0, 0], expected)
    again = batch_mix(images, labels, "mixup", 1.0, torch.Generator().manual_seed(0))
    assert again[3] == lam and torch.equal(again[2], yb)
    lams = [batch_mix(images, labels, "mixup", 0.2)[3] for _ in range(50)]
    assert all(0.0 <= v <= 1.0 for v in lams) and len(set(lams)) > 40
    assert batch_mix(images, labels, "mixup", alpha=0.0)[3] == 1.0


def test_cutmix_box_and_exact_lam() -> None:
    images, labels = _indexed_batch()
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        mixed, ya, yb, lam = batch_mix(images, labels, "cutmix", alpha=1.0, generator=g)
        assert 0.0 <= lam <= 1.0 and torch.equal(ya, labels)
        from_a = (mixed[:, 0] == labels.view(-1, 1, 1).float()).float().mean((1, 2))
        from_b = (mixed[:, 0] == yb.view(-1, 1, 1).float()).float().mean((1, 2))
        moved = yb != labels
        assert torch.allclose(from_a[moved], torch.full_like(from_a[moved], lam))
        # every pixel comes from the sample itself or from its partner
        assert torch.allclose(torch.where(moved, from_a + from_b, from_a), torch.ones(8))
    with pytest.raises(ConfigError, match="float"):
        batch_mix(images.to(torch.uint8), labels, "mixup")
    with pytest.raises(ConfigError, match="mixup, cutmix"):
        batch_mix(images, labels, "manifold")


def _reference_crop_flip(img: torch.Tensor, oy: int, ox: int, flip: bool, p: int) -> torch.Tensor:
    """One image through torchvision's own functional pad / crop / hflip."""
    H, W = img.shape[-2:]
    out = TF.crop(TF.pad(img, [p, p, p, p], fill=0), oy, ox, H, W)
    return TF.horizontal_flip(out) if flip else out


def test_batch_crop_flip_equals_per_image_result() -> None:
    B = 32
    images = torch.stack([_image(i) for i in range(B)])
    aug = BatchCropFlip(padding=4)
    oy, ox, flip = aug.sample_params(B, torch.Generator().manual_seed(1))
    out = aug.apply(images, oy, ox, flip)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.is_contiguous()
    for i in range(B):
        ref = _reference_crop_flip(images[i], int(oy[i]), int(ox[i]), bool(flip[i]), 4)
        assert torch.equal(out[i], ref), i
    fl = aug.apply(images.float(), oy, ox, flip)
    assert fl.dtype == torch.float32 and torch.equal(fl, out.float())


def test_batch_crop_flip_draws_per_sample_parameters() -> None:
    B = 64
    one = _image(3)
    batch = one.expand(B, 3, 32, 32).contiguous()  # the same image B times
    g = torch.Generator().manual_seed(0)
    aug = BatchCropFlip(padding=4, generator=g)
    out = aug(batch)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 30  # 81 offsets x 2 flips: independent draws give many outcomes
    oy, ox, flip = aug.sample_params(4096, torch.Generator().manual_seed(0))
    assert set(oy.tolist()) == set(range(9)) == set(ox.tolist())
    assert 0.45 < flip.float().mean().item() < 0.55
    # the trap: a v2 transform on a batch tensor draws ONE crop and ONE flip for all samples
    torch.manual_seed(0)
    v2_out = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])(batch)
    assert all(torch.equal(v2_out[0], v2_out[i]) for i in range(B))


def test_batch_crop_flip_is_deterministic_per_generator() -> None:
    batch = torch.stack([_image(i) for i in range(16)])
    a = BatchCropFlip(4)(batch, torch.Generator().manual_seed(5))
    b = BatchCropFlip(4, generator=torch.Generator().manual_seed(5))(batch)
    c = BatchCropFlip(4)(batch, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    no_flip = BatchCropFlip(0, flip=False)(batch)
    assert torch.equal(no_flip, batch)


# ----- BatchRandAugment and the batched views (data.batch_augment) -----


def _batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.stack([_image(seed + i) for i in range(n)])


def test_batch_randaugment_has_torchvisions_ops_and_magnitudes() -> None:
    ra = v2.RandAugment(2, 9)
    b = BatchRandAugment(2, 9)
    assert b.ops == list(ra._AUGMENTATION_SPACE) and len(b.ops) == 14
    # bin 9 of 31: rotate 9 degrees, brightness 1 +- 0.27, translate 150/331*32*9/30 pixels
    assert b.magnitude_of("Rotate", False, 32, 32) == pytest.approx(9.0)
    assert b.magnitude_of("Rotate", True, 32, 32) == pytest.approx(-9.0)
    assert b.magnitude_of("Brightness", True, 32, 32) == pytest.approx(-0.27)
    assert b.magnitude_of("TranslateX", False, 32, 32) == pytest.approx(150 / 331 * 32 * 9 / 30)
    assert b.magnitude_of("Posterize", True, 32, 32) == 7  # unsigned: the sign is ignored
    assert b.magnitude_of("Equalize", False, 32, 32) == 0.0


@pytest.mark.parametrize("op", BatchRandAugment().ops)
def test_every_randaugment_op_on_a_batch_is_the_op_on_each_image(op: str) -> None:
    # what makes grouping the samples exact: an op applied to a batch transforms each image
    # as it would alone (contrast, autocontrast, equalize: each image's own statistics)
    b = BatchRandAugment()
    imgs = _batch(6)
    imgs[2] = imgs[2] // 4  # a dark image, so that autocontrast / equalize have work to do
    for neg in (False, True):
        mag = b.magnitude_of(op, neg, 32, 32)
        together = b.apply_op(imgs, op, mag)
        alone = torch.stack([b.apply_op(im, op, mag) for im in imgs])
        assert together.dtype == torch.uint8 and torch.equal(together, alone), (op, neg)


def test_batch_randaugment_applies_each_samples_own_draws_in_order() -> None:
    b = BatchRandAugment(num_ops=2)
    imgs = _batch(40, seed=3)
    op, neg = b.sample_params(40, torch.Generator().manual_seed(1))
    assert op.shape == neg.shape == (2, 40)
    out = b.apply(imgs, op, neg)
    for i in range(40):
        want = imgs[i]
        for r in range(2):
            name = b.ops[int(op[r, i])]
            want = b.apply_op(want, name, b.magnitude_of(name, bool(neg[r, i]), 32, 32))
        assert torch.equal(out[i], want), i


def _outcomes(img: torch.Tensor) -> dict[tuple[str, bool], torch.Tensor]:
    b = BatchRandAugment(num_ops=1)
    space = v2.RandAugment._AUGMENTATION_SPACE
    return {
        (op, neg): b.apply_op(img, op, b.magnitude_of(op, neg, 32, 32))
        for op in b.ops
        for neg in ((False, True) if space[op][1] else (False,))
    }


def _frequencies(outputs: torch.Tensor, img: torch.Tensor) -> dict[tuple[str, bool], int]:
    table = _outcomes(img)
    keys = list(table)
    stacked = torch.stack([table[k] for k in keys])  # (outcomes, C, H, W)
    counts = dict.fromkeys(keys, 0)
    for out in outputs:
        hit = (stacked == out).flatten(1).all(1).nonzero().flatten().tolist()
        assert hit, "an output that no single RandAugment op gives"
        counts[keys[hit[0]]] += 1
    return counts


def test_batch_randaugment_draws_what_torchvision_draws_per_image() -> None:
    # one image repeated: every (op, sign) outcome must appear with torchvision's per-image
    # probability (1/14 per op, halved between the signs of the signed ones), for our batched
    # draws and for v2.RandAugment called image by image alike
    img = (_image(5).int() * 3 // 4 + 30).to(torch.uint8)  # 30-221: every op changes it
    table = _outcomes(img)
    assert len({tuple(t.flatten().tolist()) for t in table.values()}) == len(table)  # distinct
    n = 2800
    torch.manual_seed(0)
    ours = BatchRandAugment(num_ops=1)(img.expand(n, -1, -1, -1).clone())
    theirs = torch.stack([v2.RandAugment(num_ops=1)(img) for _ in range(n)])
    space = v2.RandAugment._AUGMENTATION_SPACE
    for got in (_frequencies(ours, img), _frequencies(theirs, img)):
        for (op, _), count in got.items():
            p = 1 / 14 / (2 if space[op][1] else 1)
            sd = (n * p * (1 - p)) ** 0.5
            assert abs(count - n * p) < 4.5 * sd, (op, count, n * p)


def test_batched_views_and_their_errors() -> None:
    g = torch.Generator().manual_seed(0)
    imgs = _batch(64)
    ra = build_batch_view("randaugment", generator=g)
    out = ra(imgs)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    assert not torch.equal(out, ra(imgs))  # fresh draws every call
    assert torch.equal(build_batch_view("none")(imgs), imgs)
    assert isinstance(build_batch_view("crop_flip"), BatchCropFlip)
    assert set(BATCH_VIEWS.names()) == {"none", "crop_flip", "randaugment"}
    with pytest.raises(ConfigError, match="'autoaugment' has no batched version.*randaugment"):
        build_batch_view("autoaugment")
    with pytest.raises(ConfigError, match="magnitude must be in"):
        BatchRandAugment(magnitude=31)


def test_batched_randaugment_view_seeded_by_its_generator_repeats() -> None:
    imgs = _batch(32)
    a = build_batch_view("randaugment", generator=torch.Generator().manual_seed(7))(imgs)
    b = build_batch_view("randaugment", generator=torch.Generator().manual_seed(7))(imgs)
    assert torch.equal(a, b)
