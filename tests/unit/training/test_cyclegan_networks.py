"""CycleGAN networks: shapes, the 70x70 receptive field, instance norm, and the image pool."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.networks.cyclegan import (
    CycleGANNetConfig,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    default_blocks,
    discriminator_kwargs,
    generator_kwargs,
)


@pytest.mark.parametrize("size", [(32, 32), (16, 24), (64, 48)])
def test_generator_keeps_the_size_and_range(size):
    g = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.rand(2, 3, *size) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() < 1  # tanh


def test_generator_structure_follows_the_paper():
    g = ResnetGenerator(ngf=8, n_blocks=6, resolution=128)
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    strided = [m for m in convs if m.stride == (2, 2)]
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(strided) == 2 and len(ups) == 2
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in g.modules()) == 2 + 2 * 6
    assert convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    # feature maps ngf -> 2ngf -> 4ngf in the residual blocks
    assert strided[1].out_channels == 32
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not n.affine and not n.track_running_stats for n in norms)
    assert default_blocks(128) == 6 and default_blocks(256) == 9


def test_generator_rejects_sizes_not_multiple_of_four():
    with pytest.raises(ValueError, match="multiples of 4"):
        ResnetGenerator(ngf=4, n_blocks=0)(torch.zeros(1, 3, 30, 32))


def test_generator_uses_per_image_statistics():
    """Instance norm: an image's translation does not depend on the rest of the batch."""
    g = ResnetGenerator(ngf=8, n_blocks=1).eval()
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    alone = g(a)
    batched = g(torch.cat([a, b]))[:1]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("res", [32, 64])
def test_patch_discriminator_output_map(res):
    d = PatchDiscriminator(ndf=8, n_layers=3)
    out = d(torch.randn(2, 3, res, res))
    side = res // 8 - 2
    assert out.shape == (2, 1, side, side)


def test_patch_discriminator_receptive_field_is_70():
    """Each output logit sees a 70x70 patch of the input (the PatchGAN of pix2pix/CycleGAN)."""
    torch.manual_seed(0)
    d = PatchDiscriminator(ndf=4, n_layers=3)
    for m in d.modules():  # no instance norm mixing the whole image into every logit
        if isinstance(m, nn.InstanceNorm2d):
            m.forward = lambda x: x  # type: ignore[method-assign]
    x = torch.randn(1, 3, 160, 160, requires_grad=True)
    out = d(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero().flatten()
    cols = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_kwargs_and_validation():
    cfg = CycleGANNetConfig(ngf=8, ndf=8)
    assert generator_kwargs(cfg, 256, 3)["n_blocks"] == 9
    assert generator_kwargs(cfg, 64, 1)["n_blocks"] == 6
    assert generator_kwargs(CycleGANNetConfig(n_blocks=2), 64, 3)["n_blocks"] == 2
    with pytest.raises(ValueError, match="d_layers"):
        discriminator_kwargs(cfg, 16, 3)
    with pytest.raises(ValueError, match="ngf"):
        CycleGANNetConfig(ngf=0)


# -- the image pool ------------------------------------------------------------------------------


def _images(start: int, n: int) -> torch.Tensor:
    """Images whose every pixel is their id, so what comes back can be identified."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None, None, None].expand(
        n, 1, 2, 2
    )


def _ids(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def test_pool_fills_first_returning_the_images_themselves():
    pool = ImagePool(size=4)
    gen = torch.Generator().manual_seed(0)
    assert _ids(pool(_images(0, 3), gen)) == [0, 1, 2]
    assert pool.count == 3
    # the 4th fills the last slot; the 5th and 6th may draw only from slots full at step start
    out = _ids(pool(_images(3, 3), gen))
    assert out[0] == 3 and pool.count == 4
    assert all(o in (0, 1, 2, 4, 5) for o in out[1:])
    assert sorted(_ids(pool.images)) == sorted(set(_ids(pool.images)))


def test_pool_returns_stored_images_half_the_time_and_keeps_them_consistent():
    pool = ImagePool(size=10)
    gen = torch.Generator().manual_seed(1)
    pool(_images(0, 10), gen)
    stored, fresh, next_id = 0, 0, 10
    for _ in range(200):
        before = set(_ids(pool.images))
        new = _images(next_id, 5)
        out = _ids(pool(new, gen))
        after = set(_ids(pool.images))
        for i, o in enumerate(out):
            if o == next_id + i:
                fresh += 1
                assert o not in after  # returned as it is: not stored
            else:
                stored += 1
                assert o in before and o not in after  # swapped out ...
        # every swapped-out image's replacement is one of the new ones
        assert after - before <= set(range(next_id, next_id + 5))
        assert len(before - after) == len(after - before)
        next_id += 5
    assert 0.4 < stored / (stored + fresh) < 0.6


def test_pool_is_deterministic_under_a_generator_and_resumes_exactly():
    def run(pool, gen, start, steps):
        return [_ids(pool(_images(start + 3 * s, 3), gen)) for s in range(steps)]

    a = ImagePool(size=5)
    ga = torch.Generator().manual_seed(7)
    full = run(a, ga, 0, 12)

    b = ImagePool(size=5)
    gb = torch.Generator().manual_seed(7)
    first = run(b, gb, 0, 5)
    state, rng = b.state_dict(), gb.get_state()
    c = ImagePool(size=5)
    c.load_state_dict(state)
    gc = torch.Generator()
    gc.set_state(rng)
    second = run(c, gc, 15, 7)
    assert first + second == full
    assert len({tuple(x) for x in full}) > 1


def test_pool_split_select_push_equals_one_call():
    """Selecting per micro-batch and pushing the global batch (the multi-process path) gives
    what one call on the whole batch gives."""
    one, split = ImagePool(size=6), ImagePool(size=6)
    for step in range(6):
        images = _images(100 * step, 4)
        gen = torch.Generator().manual_seed(step)
        swap, index = one.plan(4, images.device, gen)
        whole = one.select(images, swap, index)
        one.push(images, swap, index)
        parts = torch.cat(
            [
                split.select(images[i : i + 2], swap[i : i + 2], index[i : i + 2], start=i)
                for i in (0, 2)
            ]
        )
        split.push(images, swap, index)
        torch.testing.assert_close(whole, parts)
        torch.testing.assert_close(one.images, split.images)


def test_pool_of_size_zero_is_the_identity_and_size_mismatch_is_an_error():
    pool = ImagePool(size=0)
    x = torch.randn(3, 3, 4, 4)
    assert pool(x) is x
    with pytest.raises(ValueError, match="pool size"):
        ImagePool(size=3).load_state_dict(ImagePool(size=4).state_dict())
