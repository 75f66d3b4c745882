"""The fast CIFAR-10 recipe (fastconv/train/fast_cifar.py) and its network (fastconv/models/fast_cifar.py)."""

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.data import synthetic_images
from fastconv.models import FastCifarNet
from fastconv.train import fast_cifar
from fastconv.train.fast_cifar import FastCifarRecipe, Lookahead, TrainBatches, predict, random_crop

SMALL = (8, 16, 16)


def tiny_data(n_train=192, n_test=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images, labels = synthetic_images(n_train + n_test, num_classes=classes, seed=seed)
    images = torch.as_tensor(images).reshape(-1, 3, 32, 32)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    perm = torch.randperm(len(labels), generator=g)
    images, labels = images[perm], labels[perm]
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def test_network_shapes_layers_and_initialisation():
    net = FastCifarNet(num_classes=7, widths=SMALL)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 7 and all(type(m) is fastconv.Conv2d for m in convs)
    assert len(pools) == 4 and all(type(m) is fastconv.MaxPool2d for m in pools)
    w = net.block2.conv1.weight  # 8 -> 16: the first 8 outputs start as the identity
    identity = torch.zeros(8, 8, 3, 3)
    identity[range(8), range(8), 1, 1] = 1
    assert torch.equal(w[:8], identity)
    assert not net.whiten.weight.requires_grad and not net.block1.norm1.weight.requires_grad
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="widths"):
        FastCifarNet(widths=(8, 16))


def test_whitening_layer_decorrelates_patches():
    torch.manual_seed(0)
    mix = torch.randn(12, 12)  # correlated 2x2 patches
    images = (torch.randn(400, 12, 16, 16).permute(0, 2, 3, 1) @ mix).permute(0, 3, 1, 2)
    images = F.pixel_shuffle(images.reshape(400, 3 * 4, 16, 16), 2)  # (400, 3, 32, 32)
    net = FastCifarNet(widths=SMALL)
    net.init_whitening(images, eps=0)
    out = F.conv2d(images, net.whiten.weight)[:, :12]  # the + half: one channel per eigen-direction
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(flat.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.05), cov
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


def test_random_crop_takes_each_image_at_its_own_offset():
    g = torch.Generator().manual_seed(1)
    padded = torch.randn(50, 3, 36, 36)
    out = random_crop(padded, 32, torch.Generator().manual_seed(1))
    offsets = torch.randint(0, 25, (50,), generator=g)
    for i in range(50):
        dy, dx = divmod(int(offsets[i]), 5)
        assert torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])
    assert len(offsets.unique()) > 10


def test_train_batches_alternate_the_flips_and_keep_labels():
    images = torch.arange(10 * 3 * 32 * 32, dtype=torch.float32).reshape(10, 3, 32, 32)
    labels = torch.arange(10)
    batches = TrainBatches(images, labels, batch_size=4, translate=0, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 2  # the ragged last batch is dropped
    seen = {}
    for epoch in range(2):
        for x, y in batches.epoch(epoch):
            assert x.shape == (4, 3, 32, 32)
            for xi, yi in zip(x, y):
                as_stored = images[int(yi)]
                flipped = torch.equal(xi, as_stored.flip(-1))
                assert flipped or torch.equal(xi, as_stored)
                seen.setdefault(int(yi), {})[epoch] = flipped
    both = [v for v in seen.values() if len(v) == 2]
    assert both and all(v[0] != v[1] for v in both)  # odd epochs see the mirror of even epochs


def test_lookahead_pulls_towards_the_average():
    net = torch.nn.Linear(3, 2)
    la = Lookahead(net)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    la.update(net, decay=0.75)
    assert torch.allclose(net.weight, start + 0.25)
    assert torch.allclose(la.average["weight"], start + 0.25)


def test_predict_tta_level_2_averages_six_views():
    torch.manual_seed(0)
    net = FastCifarNet(widths=SMALL).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        def mirrored(v):
            return 0.5 * net(v) + 0.5 * net(v.flip(-1))
        p = F.pad(x, (1,) * 4, mode="reflect")
        expected = 0.5 * mirrored(x) + 0.25 * (mirrored(p[..., :32, :32]) + mirrored(p[..., 2:, 2:]))
    assert torch.allclose(predict(net, x, 2, batch_size=4), expected, atol=1e-5)
    assert torch.allclose(predict(net, x, 0), net(x), atol=1e-5)


@pytest.mark.parametrize("optimizer", ["muon", "sgd"])
def test_recipe_learns_tiny_data_and_reports_consistently(optimizer):
    x, y, xt, yt = tiny_data()
    recipe = FastCifarRecipe(epochs=4, batch_size=32, widths=SMALL, seed=3, optimizer=optimizer)
    model, history, result = fast_cifar.train(recipe, x, y, xt, yt, num_classes=4, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert result["steps"] == 4 * (192 // 32) and result["images_seen"] == result["steps"] * 32
    assert result["test"]["accuracy"] > 0.6, result["test"]["accuracy"]  # chance is 0.25
    logits = predict(model, fast_cifar.normalize(xt), recipe.tta_level)
    assert torch.equal(logits.argmax(1), result["test_logits"].argmax(1))
    # the checkpoint rebuilds the same model
    ckpt = fast_cifar.checkpoint(model, recipe, 4)
    again = FastCifarNet(num_classes=4, widths=SMALL, scale=ckpt["metadata"]["scale"])
    again.load_state_dict(ckpt["model"])
    assert torch.allclose(predict(again, fast_cifar.normalize(xt), 2), logits, atol=1e-5)
    if optimizer == "muon":  # filters kept at norm sqrt(out_channels); logits scaled by 1 / width
        assert model.scale == ckpt["metadata"]["scale"] == 1 / SMALL[2]
        for name, p in model.named_parameters():
            if p.dim() == 4 and p.requires_grad:
                assert abs(p.norm().item() / p.shape[0] ** 0.5 - 1) < 0.05, name


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_whitening_bias_trains_for_its_epochs_only(optimizer):
    x, y, xt, yt = tiny_data(n_train=64, n_test=32)
    for epochs in (0, 1):
        # (12 steps: lookahead's average must have taken in the live weights at step 5 or 10)
        recipe = FastCifarRecipe(epochs=3, batch_size=16, widths=SMALL, seed=2, optimizer=optimizer,
                                 whiten_bias_epochs=epochs)
        torch.manual_seed(recipe.seed)
        initial = fast_cifar.build_model(recipe, 4).whiten.bias.detach().clone()
        model = fast_cifar.train(recipe, x, y, num_classes=4, progress=False)[0]
        assert torch.equal(model.whiten.bias, initial) == (epochs == 0), epochs


def test_recipe_is_deterministic_for_a_seed():
    x, y, xt, yt = tiny_data(n_train=96, n_test=32)
    recipe = FastCifarRecipe(epochs=1, batch_size=32, widths=SMALL, seed=5)
    a = fast_cifar.train(recipe, x, y, xt, yt, num_classes=4, progress=False)[0]
    b = fast_cifar.train(recipe, x, y, xt, yt, num_classes=4, progress=False)[0]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_torch_layers_give_the_same_run():
    x, y, xt, yt = tiny_data(n_train=64, n_test=32)
    ours = fast_cifar.build_model(FastCifarRecipe(widths=SMALL))
    theirs = fast_cifar.build_model(FastCifarRecipe(widths=SMALL, layers="torch"))
    assert not any(isinstance(m, (fastconv.Conv2d, fastconv.MaxPool2d)) for m in theirs.modules())
    theirs.load_state_dict(ours.state_dict())
    inputs = fast_cifar.normalize(x[:8])
    assert torch.allclose(ours(inputs), theirs(inputs), atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_fine_tuning_loads_the_backbone_new_head_frozen_first_epoch(optimizer):
    x, y, xt, yt = tiny_data(n_train=64, n_test=32)
    pre = FastCifarNet(num_classes=4, widths=SMALL)
    with torch.no_grad():
        for p in pre.parameters():
            p.add_(0.01 * torch.randn_like(p))
    recipe = FastCifarRecipe(epochs=1, batch_size=32, widths=SMALL, freeze_backbone_epochs=1, backbone_lr_mult=0.1,
                             optimizer=optimizer)
    model = fast_cifar.train(recipe, x, y, xt, yt, num_classes=4, progress=False, pretrained=pre.state_dict())[0]
    for (name, p), q in zip(model.named_parameters(), pre.parameters()):
        if name.startswith("fc."):
            assert not torch.equal(p, q), name  # a new head, trained
        else:
            assert torch.equal(p, q), name  # backbone frozen for the one epoch
    with pytest.raises(ValueError, match="not match the model"):
        fast_cifar.train(recipe, x, y, xt, yt, num_classes=4, progress=False,
                         pretrained=FastCifarNet(num_classes=4).state_dict())


def test_recipe_validates_its_settings():
    for optimizer, defaults in fast_cifar.OPTIMIZER_DEFAULTS.items():
        recipe = FastCifarRecipe(optimizer=optimizer)
        assert (recipe.epochs, recipe.batch_size) == defaults
    assert FastCifarRecipe().optimizer == "muon" and FastCifarRecipe(epochs=3, batch_size=8).epochs == 3
    with pytest.raises(ValueError, match="optimizer"):
        FastCifarRecipe(optimizer="adam")
    with pytest.raises(ValueError, match="tta_level"):
        FastCifarRecipe(tta_level=3)
    with pytest.raises(ValueError, match="layers"):
        FastCifarRecipe(layers="cudnn")
    with pytest.raises(ValueError, match="batch_size"):
        FastCifarRecipe(batch_size=0)
    x, y, xt, yt = tiny_data(n_train=16, n_test=8)
    with pytest.raises(ValueError, match="larger than"):
        fast_cifar.train(FastCifarRecipe(batch_size=32, widths=SMALL), x, y, progress=False)
