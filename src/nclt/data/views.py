"""Views (per-image augmentations), batch mixing and a vectorised batch crop/flip.

A *view* is a callable on one uint8 image ``(C, H, W)`` that returns a uint8 tensor; it never
normalises (the network does, ``models/network.py``). Per-image views are built from
``torchvision.transforms.v2`` and run in DataLoader workers; :class:`BatchCropFlip` does the
standard CIFAR crop + flip on a whole batch on the accelerator instead, with independent
random parameters per sample (a v2 transform called on a batch tensor draws ONE set of
parameters for the whole batch; that is the trap it avoids).

Names for :func:`build_view`:

=====================  ==================================================================
``none``               identity
``crop_flip``          RandomCrop(size, padding=4) + RandomHorizontalFlip (LDAM-DRW)
``autoaugment``        crop_flip + AutoAugment (CIFAR-10 policy)
``randaugment``        crop_flip + RandAugment(n=2, m=9)
``cutout``             crop_flip + Cutout 16x16 (``cutout=`` adds it to any view)
``autoaugment_cutout`` crop_flip + AutoAugment + Cutout 16x16: BCL's classification view
``simclr``             RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 +
                       RandomGrayscale p=0.2: SimAugment, BCL's contrastive views
``rrc_flip``           RandomResizedCrop(224) + flip, for ImageNet-size training
``center_crop``        Resize(256) + CenterCrop(224), for ImageNet-size evaluation
=====================  ==================================================================

``none``, ``crop_flip`` and ``randaugment`` also have batched twins (:func:`build_batch_view`,
``data.batch_augment: true``): :class:`BatchCropFlip` and :class:`BatchRandAugment` transform
a whole uint8 batch in the training process, each sample with its own random parameters, for
the same distribution at a fraction of the per-image cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2

from nclt.errors import ConfigError, closest
from nclt.registry import Registry

View = Callable[[Tensor], Any]

VIEWS: Registry[Callable[..., View]] = Registry("view")


def apply_views(image: Tensor, views: View | Sequence[View] | None) -> Any:
    """Apply a dataset's views to one image.

    ``None`` returns the image; one callable (or a one-element list) returns its output; two or
    more views return a tuple with one entry per view (the multi-view contract of datasets).
    """
    if views is None:
        return image
    if callable(views):
        return views(image)
    if len(views) == 1:
        return views[0](image)
    return tuple(v(image) for v in views)


def check_views(views: Any) -> View | list[View] | None:
    """Validate a dataset's ``views`` argument: None, a callable, or a list of callables."""
    if views is None or callable(views):
        return views
    views = list(views)
    if not views or not all(callable(v) for v in views):
        raise ConfigError("views must be None, a callable, or a non-empty list of callables")
    return views


class MultiView:
    """Several views of one image: ``MultiView([a, b])(x) == (a(x), b(x))``.

    Each view draws its own random parameters, so the entries differ (BCL: one classification
    view and two contrastive views of each image).
    """

    def __init__(self, views: Sequence[View]) -> None:
        views = list(views)
        if not views or not all(callable(v) for v in views):
            raise ConfigError("MultiView needs a non-empty list of callables")
        self.views = views

    def __call__(self, image: Tensor) -> tuple[Any, ...]:
        return tuple(v(image) for v in self.views)

    def __len__(self) -> int:
        return len(self.views)

    def __repr__(self) -> str:
        return f"MultiView({self.views!r})"


class Cutout(nn.Module):
    """Zero a ``size`` x ``size`` square centred anywhere in the image (DeVries & Taylor 2017).

    The centre is uniform over the image and the square is clipped at the border, as in
    Cutout's reference definition (one hole, always applied). ``v2.RandomErasing`` differs:
    it keeps the box fully inside the image and applies with probability 0.5 by default, which
    is why this small class exists. The fill is 0 (black) on the uint8 image.

    Args:
        size: side of the square in pixels (CIFAR: 16).
        fill: value written into the square.
    """

    def __init__(self, size: int = 16, fill: int = 0) -> None:
        super().__init__()
        if size < 1:
            raise ConfigError(f"cutout size must be >= 1, got {size}")
        self.size = int(size)
        self.fill = fill

    def forward(self, image: Tensor) -> Tensor:
        """``(..., C, H, W)`` -> same shape and dtype, with one square set to ``fill``."""
        H, W = image.shape[-2:]
        cy = int(torch.randint(H, ()))
        cx = int(torch.randint(W, ()))
        half = self.size // 2
        y0, y1 = max(cy - half, 0), min(cy - half + self.size, H)
        x0, x1 = max(cx - half, 0), min(cx - half + self.size, W)
        out = image.clone()
        out[..., y0:y1, x0:x1] = self.fill
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}"


def _crop_flip(size: int, padding: int, flip: bool) -> list[nn.Module]:
    ops: list[nn.Module] = [v2.RandomCrop(size, padding=padding, fill=0)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return ops


def _rrc_flip(size: int, scale: tuple[float, float], flip: bool) -> list[nn.Module]:
    ops: list[nn.Module] = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return ops


_POLICIES = {
    "cifar10": v2.AutoAugmentPolicy.CIFAR10,
    "imagenet": v2.AutoAugmentPolicy.IMAGENET,
    "svhn": v2.AutoAugmentPolicy.SVHN,
}


def _base(base: str, size: int, padding: int, flip: bool, scale: tuple[float, float]) -> list:
    if base == "crop_flip":
        return _crop_flip(size, padding, flip)
    if base == "rrc_flip":
        return _rrc_flip(size, scale, flip)
    if base == "none":
        return []
    raise ConfigError(f"unknown base {base!r} for a view; known: crop_flip, rrc_flip, none")


_VIEW_KW = {
    "padding",
    "flip",
    "cutout",
    "base",
    "policy",
    "n",
    "m",
    "scale",
    "resize",
}


def build_view(name: str, image_size: int | None = None, **kw: Any) -> View:
    """Build a named view (see the module docstring for the names).

    Args:
        name: the view's name.
        image_size: output side; default 32 for the CIFAR views, 224 for ``rrc_flip`` and
            ``center_crop``.
        **kw: ``padding`` (crop padding, 4), ``flip`` (horizontal flip, True), ``cutout``
            (False, True for 16, or a side in pixels: adds Cutout to any view), ``base``
            (``crop_flip`` or ``rrc_flip``: the geometric part of ``autoaugment`` /
            ``randaugment`` / ``cutout``), ``policy`` (AutoAugment: ``cifar10``, ``imagenet``,
            ``svhn``), ``n`` and ``m`` (RandAugment ops and magnitude, 2 and 9), ``scale``
            (RandomResizedCrop area range; (0.08, 1.0) as SimCLR), ``resize`` (``center_crop``
            resize side; ``round(image_size * 256 / 224)``).

    Returns:
        A callable from uint8 ``(C, H, W)`` to uint8 ``(C, size, size)``. The colour views
        (``simclr``, AutoAugment, RandAugment) need 3-channel images.

    Raises:
        ConfigError: an unknown name or keyword.
    """
    unknown = set(kw) - _VIEW_KW
    if unknown:
        bad = sorted(unknown)[0]
        raise ConfigError(
            f"unknown view option {bad!r}.{closest(bad, _VIEW_KW)} "
            f"Known: {', '.join(sorted(_VIEW_KW))}"
        )
    builder = VIEWS.get(name)
    cutout = kw.pop("cutout", False)
    try:
        view = builder(image_size, **kw)
    except TypeError as e:  # an option this view does not take
        raise ConfigError(f"view {name!r} does not take {sorted(kw)}: {e}") from None
    if cutout:
        size = 16 if cutout is True else int(cutout)
        view = v2.Compose([view, Cutout(size)])
    return view


def _size(image_size: int | None, default: int) -> int:
    return default if image_size is None else int(image_size)


@VIEWS.register("none")
def _none(image_size: int | None = None) -> View:
    return v2.Identity()


@VIEWS.register("crop_flip")
def _view_crop_flip(image_size: int | None = None, padding: int = 4, flip: bool = True) -> View:
    return v2.Compose(_crop_flip(_size(image_size, 32), padding, flip))


@VIEWS.register("autoaugment")
def _view_autoaugment(
    image_size: int | None = None,
    padding: int = 4,
    flip: bool = True,
    base: str = "crop_flip",
    policy: str = "cifar10",
    scale: tuple[float, float] = (0.08, 1.0),
) -> View:
    if policy not in _POLICIES:
        raise ConfigError(f"unknown AutoAugment policy {policy!r}; known: {', '.join(_POLICIES)}")
    size = _size(image_size, 224 if base == "rrc_flip" else 32)
    ops = _base(base, size, padding, flip, tuple(scale))
    return v2.Compose([*ops, v2.AutoAugment(_POLICIES[policy])])


@VIEWS.register("randaugment")
def _view_randaugment(
    image_size: int | None = None,
    padding: int = 4,
    flip: bool = True,
    base: str = "crop_flip",
    n: int = 2,
    m: int = 9,
    scale: tuple[float, float] = (0.08, 1.0),
) -> View:
    size = _size(image_size, 224 if base == "rrc_flip" else 32)
    ops = _base(base, size, padding, flip, tuple(scale))
    return v2.Compose([*ops, v2.RandAugment(num_ops=n, magnitude=m)])


@VIEWS.register("cutout")
def _view_cutout(
    image_size: int | None = None,
    padding: int = 4,
    flip: bool = True,
    base: str = "crop_flip",
    scale: tuple[float, float] = (0.08, 1.0),
) -> View:
    size = _size(image_size, 224 if base == "rrc_flip" else 32)
    ops = _base(base, size, padding, flip, tuple(scale))
    return v2.Compose([*ops, Cutout(_cutout_side(size))])


@VIEWS.register("autoaugment_cutout")
def _view_autoaugment_cutout(image_size: int | None = None, **kw: Any) -> View:
    side = _size(image_size, 224 if kw.get("base") == "rrc_flip" else 32)
    return v2.Compose([_view_autoaugment(image_size, **kw), Cutout(_cutout_side(side))])


def _cutout_side(image_side: int) -> int:
    """16 (CIFAR's Cutout), but at most half the image side: a 16x16 hole blanks an 8x8
    digit entirely, whatever its centre (the digits smoke runs of BCL get a 4x4 hole)."""
    return max(1, min(16, image_side // 2))


@VIEWS.register("simclr")
def _view_simclr(
    image_size: int | None = None,
    flip: bool = True,
    scale: tuple[float, float] = (0.08, 1.0),
) -> View:
    ops = _rrc_flip(_size(image_size, 32), tuple(scale), flip)
    return v2.Compose(
        [
            *ops,
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    )


@VIEWS.register("rrc_flip")
def _view_rrc_flip(
    image_size: int | None = None,
    flip: bool = True,
    scale: tuple[float, float] = (0.08, 1.0),
) -> View:
    return v2.Compose(_rrc_flip(_size(image_size, 224), tuple(scale), flip))


@VIEWS.register("center_crop")
def _view_center_crop(image_size: int | None = None, resize: int | None = None) -> View:
    size = _size(image_size, 224)
    resize = round(size * 256 / 224) if resize is None else int(resize)
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size)])


def batch_mix(
    images: Tensor,
    labels: Tensor,
    kind: str = "mixup",
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a batch with its permutation.

    One ``lam ~ Beta(alpha, alpha)`` per batch and one random permutation ``perm``:
    MixUp returns ``lam * x + (1 - lam) * x[perm]``; CutMix pastes a box of ``x[perm]`` of area
    ``(1 - lam) H W`` (centre uniform, clipped at the border) and returns the exact ``lam`` of
    the pasted area. The loss is ``lam * L(labels_a) + (1 - lam) * L(labels_b)``.
    ``torchvision.transforms.v2.MixUp`` / ``CutMix`` are not used: they return mixed one-hot
    targets, not ``lam`` and the two label sets that the objective needs (margin losses and
    batch-count losses need hard labels). ``alpha <= 0`` gives ``lam = 1`` (no mixing).

    Args:
        images: float ``(B, C, H, W)``.
        labels: ``(B,)``.
        kind: ``"mixup"`` or ``"cutmix"``.
        alpha: Beta parameter (1.0 in ARB-Loss, ETF-DR and INC).
        generator: torch generator for the permutation, the box and the seed of ``lam``
            (numpy's Beta sampler, seeded from the generator, as torch has no seeded Beta);
            the global torch RNG when None.

    Returns:
        ``(mixed images, labels_a, labels_b, lam)`` with ``labels_a = labels``,
        ``labels_b = labels[perm]`` and ``lam`` a Python float in [0, 1].
    """
    if kind not in ("mixup", "cutmix"):
        raise ConfigError(f"unknown batch mix {kind!r}; known: mixup, cutmix")
    if not images.is_floating_point():
        raise ConfigError(f"batch_mix needs float images, got {images.dtype}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    B = images.shape[0]
    perm = torch.randperm(B, generator=generator, device=gen_device).to(images.device)
    if alpha > 0:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=gen_device).item())
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    else:
        lam = 1.0
    labels_b = labels[perm.to(labels.device)]
    if kind == "mixup":
        mixed = images * lam + images[perm] * (1.0 - lam)
        return mixed, labels, labels_b, lam
    H, W = images.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy = int(torch.randint(H, (1,), generator=generator, device=gen_device).item())
    cx = int(torch.randint(W, (1,), generator=generator, device=gen_device).item())
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
    return mixed, labels, labels_b, lam


class BatchCropFlip(nn.Module):
    """Random crop with zero padding + horizontal flip of a whole batch, per sample.

    Each sample draws its own offsets ``(oy, ox)`` in ``[0, 2 * padding]`` and its own flip,
    as ``RandomCrop(H, padding) + RandomHorizontalFlip`` applied image by image would; the
    batch is padded once and every output pixel is fetched with one ``gather``, so there is no
    Python loop over samples and it runs on the batch's device. Works for any dtype.

    Args:
        padding: zero padding on each side (4 for CIFAR).
        flip: also flip horizontally with probability 1/2.
        fill: padding value.
        generator: default generator of the random parameters (a ``forward`` argument
            overrides it); its device is where they are drawn. None: the global torch RNG.
    """

    def __init__(
        self,
        padding: int = 4,
        flip: bool = True,
        fill: float = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if padding < 0:
            raise ConfigError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)
        self.flip = bool(flip)
        self.fill = fill
        self.generator = generator

    def sample_params(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``(offset_y, offset_x, flip)``, each ``(B,)`` (long, long, bool).

        Drawn on the generator's device (CPU when None), then moved to ``device``.
        """
        gen_device = generator.device if generator is not None else torch.device("cpu")
        hi = 2 * self.padding + 1
        oy = torch.randint(hi, (batch_size,), generator=generator, device=gen_device)
        ox = torch.randint(hi, (batch_size,), generator=generator, device=gen_device)
        if self.flip:
            flip = torch.randint(2, (batch_size,), generator=generator, device=gen_device) == 1
        else:
            flip = torch.zeros(batch_size, dtype=torch.bool, device=gen_device)
        if device is not None:
            oy, ox, flip = oy.to(device), ox.to(device), flip.to(device)
        return oy, ox, flip

    def apply(self, images: Tensor, offset_y: Tensor, offset_x: Tensor, flip: Tensor) -> Tensor:
        """Crop and flip with given per-sample parameters.

        Args:
            images: ``(B, C, H, W)``.
            offset_y, offset_x: ``(B,)`` top-left corner of the crop in the padded image.
            flip: ``(B,)`` bool, flip that sample after cropping.

        Returns:
            ``(B, C, H, W)``, same dtype, contiguous.
        """
        B, C, H, W = images.shape
        p = self.padding
        padded = F.pad(images, (p, p, p, p), value=self.fill) if p else images
        Wp = W + 2 * p
        dev = images.device
        rows = offset_y.to(dev).view(B, 1) + torch.arange(H, device=dev)  # (B, H)
        base = torch.arange(W, device=dev)
        cols = torch.where(flip.to(dev).view(B, 1), W - 1 - base, base)
        cols = cols + offset_x.to(dev).view(B, 1)  # (B, W)
        flat = (rows.view(B, H, 1) * Wp + cols.view(B, 1, W)).view(B, 1, H * W)
        out = padded.reshape(B, C, -1).gather(2, flat.expand(B, C, H * W))
        return out.view(B, C, H, W)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``, each sample cropped and flipped on its own."""
        gen = generator if generator is not None else self.generator
        params = self.sample_params(images.shape[0], gen, images.device)
        return self.apply(images, *params)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, flip={self.flip}, fill={self.fill}"


class BatchRandAugment(nn.Module):
    """RandAugment (Cubuk et al. 2020) on a whole uint8 batch, every sample drawing its own ops.

    The same distribution as ``v2.RandAugment(num_ops, magnitude)`` applied image by image:
    each of the ``num_ops`` rounds picks, per sample, one of torchvision's 14 operations
    uniformly and, for the signed ones, a sign with probability 1/2; the magnitudes are
    torchvision's bins. Why it exists: a v2 transform called on a batch draws ONE operation
    for the whole batch, and called image by image it costs ~0.4 ms per 32x32 image on a CPU
    core (much of it per-call overhead), a quarter of AllNC's training step on two
    cores. Here the samples that drew the same (operation, sign) are transformed together,
    at most 22 calls per round whatever the batch size (Identity costs none).

    The operations themselves are torchvision's: the op table and the op application of
    ``v2.RandAugment`` (``_AUGMENTATION_SPACE``, ``_apply_image_or_video_transform``), not a
    rewrite, so they stay identical to the per-image view; every torchvision operation is
    per-image on a batch (contrast, autocontrast and equalize use each image's own
    statistics), which tests/data/test_data_views.py checks op by op.

    Args:
        num_ops: operations per image (2).
        magnitude: magnitude bin (9 of 31).
        num_magnitude_bins: torchvision's 31.
        generator: default generator of the random draws (a ``forward`` argument overrides
            it); its device is where they are drawn. None: the global torch RNG.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_ops < 0:
            raise ConfigError(f"RandAugment num_ops must be >= 0, got {num_ops}")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ConfigError(
                f"RandAugment magnitude must be in [0, {num_magnitude_bins - 1}], got {magnitude}"
            )
        self._ra = v2.RandAugment(num_ops, magnitude, num_magnitude_bins)
        self.ops = list(self._ra._AUGMENTATION_SPACE)
        self.generator = generator

    def magnitude_of(self, op: str, negative: bool, height: int, width: int) -> float:
        """Torchvision's magnitude of ``op`` for an image of that size (0 for the operations
        without one: Identity, AutoContrast, Equalize); ``negative`` flips the signed ones."""
        fn, signed = self._ra._AUGMENTATION_SPACE[op]
        bins = fn(self._ra.num_magnitude_bins, height, width)
        if bins is None:
            return 0.0
        m = float(bins[self._ra.magnitude])
        return -m if signed and negative else m

    def apply_op(self, images: Tensor, op: str, magnitude: float) -> Tensor:
        """One torchvision RandAugment operation with one magnitude on ``(..., C, H, W)``."""
        return self._ra._apply_image_or_video_transform(
            images, op, magnitude, interpolation=self._ra.interpolation, fill=self._ra._fill
        )

    def sample_params(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``(op, negative)``, each ``(num_ops, B)``: op indices into :attr:`ops` (long)
        and signs (bool; ignored for the unsigned operations)."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        shape = (self._ra.num_ops, batch_size)
        op = torch.randint(len(self.ops), shape, generator=generator, device=gen_device)
        negative = torch.rand(shape, generator=generator, device=gen_device) <= 0.5
        if device is not None:
            op, negative = op.to(device), negative.to(device)
        return op, negative

    def apply(self, images: Tensor, op: Tensor, negative: Tensor) -> Tensor:
        """Apply the drawn rounds: ``images`` ``(B, C, H, W)`` uint8, ``op`` and ``negative``
        ``(num_ops, B)`` as :meth:`sample_params` returns them."""
        H, W = images.shape[-2:]
        op, negative = op.cpu(), negative.cpu()  # the grouping is host-side bookkeeping
        for r in range(op.shape[0]):
            out = images.clone()
            for i in torch.unique(op[r]).tolist():
                name = self.ops[i]
                if name == "Identity":
                    continue
                signed = self._ra._AUGMENTATION_SPACE[name][1]
                drew = op[r] == i
                for neg in (False, True) if signed else (False,):
                    chosen = drew & (negative[r] == neg) if signed else drew
                    idx = chosen.nonzero().flatten()
                    if idx.numel() == 0:
                        continue
                    idx = idx.to(images.device)
                    mag = self.magnitude_of(name, neg, H, W)
                    out[idx] = self.apply_op(images[idx], name, mag)
            images = out
        return images

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, C, H, W)`` uint8 -> same, each sample augmented on its own."""
        gen = generator if generator is not None else self.generator
        return self.apply(images, *self.sample_params(images.shape[0], gen))

    def extra_repr(self) -> str:
        return f"num_ops={self._ra.num_ops}, magnitude={self._ra.magnitude}"


#: Views with a batched twin (``data.batch_augment: true``): name -> builder of a module from a
#: ``(B, C, H, W)`` batch to the batch of views, drawing per sample what the per-image view
#: draws per image (the same distribution; not the same draws).
BATCH_VIEWS: Registry[Callable[..., nn.Module]] = Registry("batched view")


@BATCH_VIEWS.register("none")
def _batch_none(generator: torch.Generator | None = None) -> nn.Module:
    return nn.Identity()


@BATCH_VIEWS.register("crop_flip")
def _batch_crop_flip(
    generator: torch.Generator | None = None, padding: int = 4, flip: bool = True
) -> nn.Module:
    return BatchCropFlip(padding, flip, generator=generator)


@BATCH_VIEWS.register("randaugment")
def _batch_randaugment(
    generator: torch.Generator | None = None,
    padding: int = 4,
    flip: bool = True,
    n: int = 2,
    m: int = 9,
) -> nn.Module:
    return nn.Sequential(
        BatchCropFlip(padding, flip, generator=generator),
        BatchRandAugment(n, m, generator=generator),
    )


def build_batch_view(name: str, generator: torch.Generator | None = None, **kw: Any) -> nn.Module:
    """The batched twin of the view ``name`` (``none``, ``crop_flip``, ``randaugment``).

    Args:
        name: the view's name, as for :func:`build_view` (small-image pad-and-crop base only).
        generator: the generator of every random draw.
        **kw: ``padding``, ``flip`` (and ``n``, ``m`` for ``randaugment``), as
            :func:`build_view`.

    Raises:
        ConfigError: a view without a batched twin (run it per image, in the workers).
    """
    if name not in BATCH_VIEWS:
        raise ConfigError(
            f"view {name!r} has no batched version (batched: {', '.join(BATCH_VIEWS.names())}); "
            "set data.batch_augment=false to run it image by image in the DataLoader workers"
        )
    return BATCH_VIEWS.build(name, generator=generator, **kw)
