"""fastconv.models: torchvision state_dict layout, and forward/backward equal to torch-layer networks."""

import io

import pytest
import torch
from torch import nn

import fastconv
from fastconv.models import lenet5, resnet18, resnet34, resnet50

from helpers.reference import ReferenceLeNet5, randomize_, reference_resnet

BUILDERS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
# torchvision's documented parameter counts (num_params in the weights' metadata)
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_parameter_count_matches_torchvision(arch):
    model = BUILDERS[arch]()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[arch]


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_state_dict_layout_is_torchvision(arch):
    ours, ref = BUILDERS[arch](), reference_resnet(arch)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same keys, same order
    assert _shapes(ours) == _shapes(ref)
    # a torchvision-layout checkpoint file loads strictly, with weights_only=True
    buf = io.BytesIO()
    torch.save(randomize_(ref).state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert ours.load_state_dict(sd, strict=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_bottleneck_is_v1_5_with_stride_on_3x3():
    m = resnet50()
    block = m.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)
    assert m.fc.in_features == 2048


def test_cifar_stem_keys_equal_only_conv1_shape_differs():
    img, cif = resnet18(stem="imagenet"), resnet18(stem="cifar")
    a, b = _shapes(img), _shapes(cif)
    assert list(a) == list(b)
    assert [k for k in a if a[k] != b[k]] == ["conv1.weight"]
    assert b["conv1.weight"] == (64, 3, 3, 3) and a["conv1.weight"] == (64, 3, 7, 7)
    assert isinstance(cif.maxpool, nn.Identity) and cif.conv1.stride == (1, 1)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_built_from_fastconv_layers(arch):
    m = BUILDERS[arch]()
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert convs and all(isinstance(c, fastconv.Conv2d) for c in convs)
    assert isinstance(m.maxpool, fastconv.MaxPool2d)
    assert all(isinstance(x, fastconv.Conv2d) for x in lenet5().modules() if isinstance(x, nn.Conv2d))
    assert isinstance(lenet5().pool1, fastconv.MaxPool2d)


# (arch, stem, batch, size): the CIFAR stem keeps full resolution, so it gets smaller images
@pytest.mark.parametrize("arch,stem,batch,size", [("resnet18", "imagenet", 8, 32), ("resnet18", "cifar", 4, 16),
                                                  ("resnet34", "imagenet", 4, 32), ("resnet50", "imagenet", 4, 32),
                                                  ("resnet50", "cifar", 2, 16)])
def test_resnet_forward_equals_torch_layers_float64(arch, stem, batch, size):
    ref = randomize_(reference_resnet(arch, num_classes=10, stem=stem), seed=1).double()
    ours = BUILDERS[arch](num_classes=10, stem=stem).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for mode in ("eval", "train"):
        ref.train(mode == "train")
        ours.train(mode == "train")
        a, b = ref(x), ours(x)
        assert b.shape == (batch, 10)
        assert (a - b).abs().max() <= 1e-10 * a.abs().max(), mode
    # the train-mode forward also updated the BatchNorm running statistics identically
    for (k, v), w in zip(ref.state_dict().items(), ours.state_dict().values()):
        assert torch.allclose(v.double(), w.double(), rtol=1e-10, atol=1e-12), k


def test_resnet18_backward_equals_torch_layers():
    ref = randomize_(reference_resnet("resnet18", num_classes=10, stem="cifar"), seed=3).double().train()
    ours = resnet18(num_classes=10, stem="cifar").double().train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 3, 5, 9])
    nn.functional.cross_entropy(ref(x), y).backward()
    nn.functional.cross_entropy(ours(x), y).backward()
    for (name, p), q in zip(ref.named_parameters(), ours.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-12), name


def test_resnet18_float32_close_to_torch_layers():
    ref = randomize_(reference_resnet("resnet18", num_classes=10), seed=5).eval()
    ours = resnet18(num_classes=10).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a, b = ref(x), ours(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


@pytest.mark.parametrize("in_channels,num_classes", [(3, 10), (1, 7)])
def test_lenet_forward_equals_torch_layers(in_channels, num_classes):
    ref = randomize_(ReferenceLeNet5(num_classes, in_channels), seed=7).double()
    ours = lenet5(num_classes=num_classes, in_channels=in_channels).double()
    ours.load_state_dict(ref.state_dict())  # same keys: conv1, conv2, fc1, fc2, fc3
    x = torch.randn(5, in_channels, 32, 32, dtype=torch.float64)
    a, b = ref(x), ours(x)
    assert b.shape == (5, num_classes)
    assert (a - b).abs().max() <= 1e-10 * a.abs().max()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="stem"):
        resnet18(stem="tiny")
    with pytest.raises(ValueError, match="num_classes"):
        resnet50(num_classes=0)
    with pytest.raises(ValueError, match="num_classes"):
        lenet5(num_classes=-1)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        lenet5()(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="expects input"):
        resnet18()(torch.randn(3, 32, 32))
