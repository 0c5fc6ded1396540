"""State-dict names, shapes, initial values and forward shapes of the four
reference models (SPEC section 3)."""
import pytest

import torch

from dfbst_np.reference import build  # noqa: E402
from dfbst_np.reference.models import VGG16_CFG  # noqa: E402

F64 = torch.float64


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_lenet300_100_state_dict():
    sd = shapes(build("lenet300_100"))
    assert list(sd) == [f"fc{i}.{p}" for i in (1, 2, 3)
                        for p in ("weight", "bias", "threshold", "dthreshold")]
    assert sd["fc1.weight"] == (300, 784) and sd["fc2.weight"] == (100, 300)
    assert sd["fc3.weight"] == (10, 100) and sd["fc3.dthreshold"] == (10,)


def test_lenet5_state_dict():
    sd = shapes(build("lenet_5", method="dst"))
    assert list(sd) == [f"{n}.{p}" for n in ("conv1", "conv2", "fc3", "fc4")
                        for p in ("weight", "bias", "threshold")]
    assert sd["conv1.weight"] == (20, 1, 5, 5) and sd["conv2.weight"] == (50, 20, 5, 5)
    assert sd["fc3.weight"] == (500, 800) and sd["fc4.weight"] == (10, 500)


def test_vgg16_state_dict_and_init():
    model = build("vgg16")
    sd = model.state_dict()
    n_conv = sum(v != "M" for v in VGG16_CFG)
    assert len(model.feature) == 3 * n_conv + VGG16_CFG.count("M") == 43
    assert tuple(sd["feature.0.weight"].shape) == (64, 3, 3, 3)
    assert "feature.0.bias" not in sd and tuple(sd["feature.0.threshold"].shape) == (64,)
    assert tuple(sd["feature.40.weight"].shape) == (512, 512, 3, 3)
    assert torch.all(sd["feature.1.weight"] == 0.5) and torch.all(sd["feature.41.bias"] == 0)
    assert sd["feature.1.num_batches_tracked"].dtype == torch.int64
    assert tuple(sd["classifier.0.weight"].shape) == (512, 512) and "classifier.0.bias" in sd
    assert torch.all(sd["classifier.1.weight"] == 1.0)  # BatchNorm1d keeps PyTorch's default
    assert tuple(sd["classifier.1.running_var"].shape) == (512,)
    assert tuple(sd["classifier.3.dthreshold"].shape) == (10,)
    assert not any(k.startswith("classifier.2") for k in sd)
    masked = [k for k in sd if k.endswith(".threshold")]
    assert len(masked) == n_conv + 2


def test_resnet18_state_dict_and_init():
    model = build("resnet18", num_classes=100)
    sd = model.state_dict()
    assert tuple(sd["conv1.weight"].shape) == (64, 3, 7, 7) and "conv1.bias" not in sd
    assert tuple(sd["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["layer2.0.downsample.0.dthreshold"].shape) == (128,)
    assert tuple(sd["layer2.0.downsample.1.running_var"].shape) == (128,)
    assert not any(k.startswith("layer1.0.downsample") or k.startswith("layer2.1.downsample") for k in sd)
    assert tuple(sd["layer4.1.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(sd["fc.weight"].shape) == (100, 512) and tuple(sd["fc.bias"].shape) == (100,)
    assert "fc.threshold" not in sd and "fc.dthreshold" not in sd
    for k, v in sd.items():
        if k.endswith("bn2.weight"):
            assert torch.all(v == 0), k
        elif ".bn" in k or k.startswith("bn1") or "downsample.1" in k:
            if k.endswith("weight"):
                assert torch.all(v == 1), k
            elif k.endswith("bias"):
                assert torch.all(v == 0), k
    # Same number of weights as torchvision's ResNet-18 (11,689,512 with 1000 classes).
    n = sum(p.numel() for name, p in model.named_parameters() if "threshold" not in name)
    assert n == 11_689_512 - 513 * 1000 + 513 * 100


@pytest.mark.parametrize("name,shape", [("lenet300_100", (3, 1, 28, 28)), ("lenet_5", (3, 1, 28, 28)),
                                        ("vgg16", (2, 3, 32, 32)), ("resnet18", (2, 3, 32, 32))])
@pytest.mark.parametrize("method", ["dfbst", "dense"])
def test_forward_shapes_and_dtype(name, shape, method):
    model = build(name, method=method, num_classes=7)
    out = model(torch.randn(*shape, dtype=F64))
    assert out.shape == (shape[0], 7) and out.dtype == F64
    has_t = any(k.endswith("threshold") for k in model.state_dict())
    assert has_t == (method != "dense")


def test_seeded_builds_are_identical_and_cast_from_float32():
    torch.manual_seed(7)
    a = build("lenet_5")
    torch.manual_seed(7)
    b = build("lenet_5", dtype=torch.float32)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k].to(v.dtype)), k
    assert a.conv1.weight.dtype == F64 and b.conv1.weight.dtype == torch.float32


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build("lenet")
    with pytest.raises(TypeError, match="dtype"):
        build("lenet_5", dtype=torch.int32)
