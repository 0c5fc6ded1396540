"""torch <-> NumPy state dicts and checkpoints keep names, order, shapes, dtypes, values."""
import numpy as np
import pytest

import torch

from dfbst_np.reference import (build, load_checkpoint, save_checkpoint,  # noqa: E402
                                to_numpy_state_dict, to_torch_state_dict)


@pytest.fixture(scope="module")
def vgg_sd():
    torch.manual_seed(0)
    model = build("vgg16")
    model(torch.randn(2, 3, 32, 32, dtype=torch.float64))  # non-trivial running stats
    return model.state_dict()


def test_round_trip_is_exact(vgg_sd):
    np_sd = to_numpy_state_dict(vgg_sd)
    assert list(np_sd) == list(vgg_sd)
    nbt = np_sd["feature.1.num_batches_tracked"]
    assert isinstance(nbt, np.ndarray) and nbt.shape == () and nbt.dtype == np.int64 and nbt == 1
    assert np_sd["feature.0.weight"].dtype == np.float64
    back = to_torch_state_dict(np_sd)
    assert list(back) == list(vgg_sd)
    for k, v in vgg_sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    # copies, not views
    np_sd["feature.0.weight"][...] = 0
    assert not torch.all(vgg_sd["feature.0.weight"] == 0)


def test_like_casts_and_checks():
    model = build("lenet300_100", dtype=torch.float32)
    np_sd = {k: v.astype(np.float64) for k, v in to_numpy_state_dict(model).items()}
    sd = to_torch_state_dict(np_sd, like=model)
    assert sd["fc1.weight"].dtype == torch.float32
    model.load_state_dict(sd)
    bad = dict(np_sd)
    bad["fc1.weight"] = bad["fc1.weight"][:, :10]
    with pytest.raises(ValueError, match="fc1.weight"):
        to_torch_state_dict(bad, like=model)
    del bad["fc3.bias"]
    with pytest.raises(KeyError, match="fc3.bias"):
        to_torch_state_dict(bad, like=model)


def test_num_batches_tracked_becomes_int64_scalar():
    sd = to_torch_state_dict({"bn.num_batches_tracked": np.array([3], dtype=np.int32)})
    t = sd["bn.num_batches_tracked"]
    assert t.dtype == torch.int64 and t.shape == () and int(t) == 3


def test_checkpoint_round_trip(tmp_path, vgg_sd):
    path = tmp_path / "ref.pth"
    torch.save(vgg_sd, path)
    np_sd = load_checkpoint(path)
    for k, v in vgg_sd.items():
        np.testing.assert_array_equal(np_sd[k], v.numpy())
        assert np_sd[k].dtype == v.numpy().dtype
    torch.save({"state_dict": vgg_sd, "epoch": 3}, tmp_path / "wrapped.pth")
    assert list(load_checkpoint(tmp_path / "wrapped.pth")) == list(vgg_sd)
    save_checkpoint(np_sd, tmp_path / "from_np.pth")
    again = torch.load(tmp_path / "from_np.pth", weights_only=True)
    for k, v in vgg_sd.items():
        assert again[k].dtype == v.dtype and torch.equal(again[k], v), k
    model = build("vgg16")
    model.load_state_dict(again)


def test_load_checkpoint_rejects_non_state_dicts(tmp_path):
    torch.save([1, 2, 3], tmp_path / "x.pth")
    with pytest.raises(ValueError, match="no state dict"):
        load_checkpoint(tmp_path / "x.pth")
