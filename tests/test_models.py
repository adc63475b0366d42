"""Backbones give pooled features of the documented width; heads expose their weight."""

import pytest
import torch

from nclt.models import BACKBONES, HEADS, Network
from nclt.models.backbones import count_parameters


@pytest.mark.parametrize("depth,params", [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6)])
def test_cifar_resnet_sizes(depth, params):
    # He et al. 2016 Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M parameters
    net = BACKBONES.build(f"resnet{depth}")
    assert net.feature_dim == 64
    assert count_parameters(net) == pytest.approx(params, rel=0.03)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_width_option_and_resnet18():
    assert BACKBONES.build("resnet32", width=32)(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert BACKBONES.build("resnet18_cifar")(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_option_a_shortcut_has_no_parameters():
    net = BACKBONES.build("resnet20")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(m.kernel_size == (1, 1) for m in convs)


def test_cosine_head_is_scale_times_cosine():
    head = HEADS.build("cosine", feature_dim=5, num_classes=3, scale=30.0)
    f = torch.randn(4, 5)
    cos = torch.nn.functional.cosine_similarity(f[:, None], head.weight[None], dim=-1)
    assert torch.allclose(head(f), 30 * cos, atol=1e-5)


def test_network_multiview_runs_backbone_once_and_splits():
    bb = BACKBONES.build("small_cnn")
    net = Network(bb, HEADS.build("linear", feature_dim=64, num_classes=10), [0.5], [0.5]).eval()
    a = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = net([a, b])
    assert out["view_features"].shape == (3, 2, 64)
    assert torch.allclose(out["view_features"][:, 0], out["features"])
    single = net(b)
    assert torch.allclose(out["view_features"][:, 1], single["features"], atol=1e-5)


def test_uint8_and_float_inputs_normalise_alike():
    net = Network(
        BACKBONES.build("small_cnn"),
        HEADS.build("linear", feature_dim=64, num_classes=10),
        [0.3],
        [0.2],
    ).eval()
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.allclose(net(x)["logits"], net(x.float() / 255)["logits"], atol=1e-5)


def test_a_float64_network_normalises_in_float64():
    # CUDA divides a tensor by a scalar as a multiplication by its reciprocal, the CPU divides:
    # in float32 the two differ by one ulp on some pixels (which moved tests/cuda's float64
    # losses by up to 2e-8), in float64 they agree. So a float64 model must normalise in float64.
    x = torch.arange(256, dtype=torch.uint8).view(4, 1, 8, 8)
    mean, std = 0.4914, 0.2470
    norm = (
        Network(
            BACKBONES.build("small_cnn"),
            HEADS.build("linear", feature_dim=64, num_classes=10),
            [mean],
            [std],
        )
        .double()
        .normalize
    )
    want = (x.double() / 255.0 - norm.mean) / norm.std
    got = norm(x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    # the CUDA-style reciprocal in float64 agrees with the division to rounding; in float32
    # it does not (the reason for the above)
    torch.testing.assert_close(x.double() * (1 / 255.0), x.double() / 255.0, rtol=0, atol=2.5e-16)
    f32 = torch.tensor(1 / 255.0, dtype=torch.float32)
    assert (x.float() * f32 != x.float() / 255.0).any()
    # a float32 network is unchanged: float32 throughout, float64 inputs included
    net32 = Network(
        BACKBONES.build("small_cnn"),
        HEADS.build("linear", feature_dim=64, num_classes=10),
        [mean],
        [std],
    ).normalize
    assert net32(x).dtype == net32(x.double() / 255).dtype == torch.float32
    torch.testing.assert_close(net32(x), ((x.double() / 255.0 - mean) / std).float())


def test_torchvision_backbones_build_without_download():
    net = BACKBONES.build("resnet50")
    assert net.feature_dim == 2048


def test_large_image_views_use_random_resized_crop():
    from nclt.runner import make_view

    big = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    for name in ("randaugment", "autoaugment_cutout", "simclr", "rrc_flip", "center_crop"):
        assert make_view(name, "imagenet_lt")(big).shape == (3, 224, 224), name
    small = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert make_view("autoaugment_cutout", "cifar10")(small).shape == (3, 32, 32)


def test_heads_are_initialised_as_the_ldam_drw_code():
    torch.manual_seed(0)
    cos = HEADS.build("cosine", feature_dim=64, num_classes=10)
    assert torch.allclose(cos.weight.norm(dim=1), torch.ones(10), atol=1e-6)
    lin = HEADS.build("linear", feature_dim=4096, num_classes=100)
    # Kaiming normal: std sqrt(2 / fan_in)
    assert lin.weight.std().item() == pytest.approx((2 / 4096) ** 0.5, rel=0.05)


@pytest.mark.parametrize("head_name", ["linear", "cosine", "etf"])
def test_heads_run_in_float32_under_bf16_autocast(head_name):
    """The backbone runs in bf16 under autocast; the heads (and extra heads) in float32, on the
    bf16 features: their outputs equal a float32 evaluation of those features."""
    torch.manual_seed(0)
    bb = BACKBONES.build("resnet20")
    head = HEADS.build(head_name, feature_dim=64, num_classes=10, scale=30.0)
    extra = torch.nn.Linear(64, 8)
    net = Network(bb, head, [0.5] * 3, [0.25] * 3, extra_heads={"proj": extra}).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        feats_ag, logits_ag = net.embed(x)
        raw = bb(net.normalize(x))
    assert raw.dtype == torch.bfloat16  # autocast still applies to the backbone
    assert out["logits"].dtype == torch.float32 and out["proj"].dtype == torch.float32
    assert feats_ag.dtype == torch.float32
    f = raw.float()
    with torch.no_grad():
        ref = head.classify(head.embed(f)) if head_name == "etf" else head(f)
        assert torch.allclose(out["logits"], ref, rtol=1e-6, atol=1e-6)
        assert torch.allclose(out["proj"], extra(f), rtol=1e-6, atol=1e-6)
        assert torch.allclose(logits_ag, ref, rtol=1e-6, atol=1e-6)
    # a bf16 head would round a scale-30 cosine logit to steps of ~0.1: visibly different
    if head_name == "cosine":
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            coarse = head(raw)
        assert (coarse.float() - ref).abs().max() > 1e-3
    # without autocast a float64 network stays float64 end to end (the float64 DDP tests)
    net.double()
    out = net(x)
    feats64, logits64 = net.embed(x)
    assert out["logits"].dtype == out["features"].dtype == torch.float64
    assert feats64.dtype == logits64.dtype == torch.float64
