"""U-Net generator and multi-scale PatchGAN: shapes, parameter counts, noise, norms, a few GAN steps."""
import pytest
import torch

from hpcgan.config import LossConfig, load_config
from hpcgan.train.losses import GANLoss
from hpcgan.workloads.crf.models import MultiScaleDiscriminator, UNetGenerator, parameter_count

# Computed once from the paper preset (hpcgan/configs/crf.yaml) and checked against the formulas below.
PAPER_G_PARAMS = 14_853_479
PAPER_D_PARAMS = 8_426_691


def unet_params(c_in: int, c_out: int, widths, norm: str = "batch") -> int:
    """Two 3x3 convs per block (bias only without norm), 2 affine params per channel per norm."""
    def block(a, b):
        conv = 9 * a * b + 9 * b * b + (2 * b if norm == "none" else 0)
        return conv + (0 if norm == "none" else 2 * 2 * b)
    n = block(c_in, widths[0]) + sum(block(widths[i - 1], widths[i]) for i in range(1, len(widths)))
    n += sum(block(widths[j + 1] + widths[j], widths[j]) for j in range(len(widths) - 1))
    return n + widths[0] * c_out + c_out


def patchgan_params(c_in: int, widths, scales: int) -> int:
    """4x4 convs; a bias only where no InstanceNorm (affine-free) follows: the first and the last conv."""
    n, c = 0, c_in
    last = len(widths)
    for i, w in enumerate(list(widths) + [1]):
        n += 16 * c * w + (w if i == 0 or i == last else 0)
        c = w
    return scales * n


@pytest.mark.parametrize("size,widths,noise", [(16, (4, 8), 0), (32, (6, 12, 24), 2), (48, (8, 8, 16, 16), 1)])
def test_generator_shapes_and_counts(size, widths, noise):
    g = UNetGenerator(5, 3, widths, noise_channels=noise)
    y = g(torch.randn(2, 5, size, size))
    assert y.shape == (2, 3, size, size)
    assert y.abs().max() <= 1.0
    assert parameter_count(g) == unet_params(5 + noise, 3, widths)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_generator_count_by_norm(norm):
    g = UNetGenerator(7, 2, (8, 16, 32), norm=norm, dropout=0.0)
    assert parameter_count(g) == unet_params(7, 2, (8, 16, 32), norm)


def test_sigmoid_output_range():
    g = UNetGenerator(3, 3, (4, 8), output="sigmoid")
    y = g(torch.randn(2, 3, 8, 8) * 10)
    assert y.min() >= 0 and y.max() <= 1


def test_residual_generator_starts_at_its_input_and_learns_a_correction():
    torch.manual_seed(0)
    g = UNetGenerator(3, 3, (4, 8), norm="none", dropout=0.0, residual=True)
    x = torch.tanh(torch.randn(2, 3, 8, 8))
    assert torch.allclose(g(x), x, atol=1e-5)  # untrained: the identity
    target = 0.5 * x  # a correction the network must learn
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    start = (g(x) - target).abs().mean().item()
    for _ in range(60):
        opt.zero_grad()
        (g(x) - target).abs().mean().backward()
        opt.step()
    assert (g(x) - target).abs().mean().item() < 0.75 * start  # the zero head still receives gradient
    assert (g(x) - x).abs().max() > 1e-2


def test_residual_generator_needs_a_matching_tanh_output():
    with pytest.raises(ValueError, match="residual"):
        UNetGenerator(5, 3, (4, 8), residual=True)
    with pytest.raises(ValueError, match="residual"):
        UNetGenerator(3, 3, (4, 8), output="sigmoid", residual=True)


def patch_out(n: int, widths) -> int:
    """4x4 conv, padding 2: n -> n // stride + 1; stride 2 except the last width and the logit conv."""
    for i in range(len(widths)):
        n = n // 2 + 1 if i < len(widths) - 1 else n + 1
    return n + 1


@pytest.mark.parametrize("size,scales", [(64, 3), (32, 2), (40, 1)])
def test_discriminator_scales(size, scales):
    d = MultiScaleDiscriminator(5, 3, (8, 16, 32), scales=scales)
    out = d(torch.randn(2, 5, size, size), torch.randn(2, 3, size, size))
    assert isinstance(out, list) and len(out) == scales
    # avg-pool 3x3 stride 2 pad 1: n -> (n - 1) // 2 + 1
    sizes = [size]
    for _ in range(scales - 1):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    assert [tuple(o.shape) for o in out] == [(2, 1, patch_out(n, (8, 16, 32)), patch_out(n, (8, 16, 32))) for n in sizes]
    assert parameter_count(d) == patchgan_params(8, (8, 16, 32), scales)


def test_paper_preset_counts():
    from hpcgan.workloads import get_workload

    cfg = load_config("crf")
    wl = get_workload(cfg)
    g, d = wl.build_generator(), wl.build_discriminator()
    assert parameter_count(g) == unet_params(44, 3, (44, 88, 176, 352, 704)) == PAPER_G_PARAMS
    assert parameter_count(d) == patchgan_params(47, (64, 128, 256, 512), 3) == PAPER_D_PARAMS
    d_logits = d(torch.zeros(1, 44, 256, 256), torch.zeros(1, 3, 256, 256))
    assert [tuple(o.shape[-2:]) for o in d_logits] == [(n, n) for n in (35, 19, 11)] == [
        (patch_out(n, (64, 128, 256, 512)),) * 2 for n in (256, 128, 64)]


def test_noise_channels_drawn_from_torch_rng():
    g = UNetGenerator(3, 3, (4, 8), noise_channels=2, dropout=0.0).eval()
    x = torch.randn(1, 3, 16, 16)
    torch.manual_seed(5)
    a = g(x)
    b = g(x)
    torch.manual_seed(5)
    c = g(x)
    assert not torch.equal(a, b)
    assert torch.equal(a, c)


def test_norm_none_keeps_samples_independent():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    for norm, independent in (("none", True), ("instance", True), ("batch", False)):
        g = UNetGenerator(3, 3, (4, 8), norm=norm, dropout=0.0).train()
        whole, part = g(x)[:2], g(x[:2])
        assert torch.allclose(whole, part, atol=1e-6) == independent, norm


def test_size_not_divisible_is_rejected():
    g = UNetGenerator(3, 3, (4, 8, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.randn(1, 3, 18, 18))


@pytest.fixture
def one_thread():
    """Tiny convs gain nothing from threads; on a shared, oversubscribed machine extra threads spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.timeout(120)
def test_few_gan_steps_reduce_matching_loss(one_thread):
    """D step then G step (D frozen) on one tiny batch: L1 falls, D learns to tell real from fake."""
    torch.manual_seed(0)
    g = UNetGenerator(4, 3, (8, 16), dropout=0.0)
    d = MultiScaleDiscriminator(4, 3, (8, 16, 32), scales=2)
    loss = GANLoss(LossConfig(gan="lsgan", lambda_gan=1.0, lambda_match=10.0))
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    cond = torch.randn(4, 4, 16, 16)
    real = torch.tanh(cond[:, :3] + 0.5 * cond[:, 3:])
    l1_hist, d_hist = [], []
    for _ in range(40):
        fake = g(cond)
        ld, sd = loss.d_loss(d, cond, real, fake)
        opt_d.zero_grad()
        ld.backward()
        opt_d.step()
        d.requires_grad_(False)
        lg, sg = loss.g_loss(d, cond, real, fake)
        opt_g.zero_grad()
        lg.backward()
        opt_g.step()
        d.requires_grad_(True)
        l1_hist.append(sg["g_l1"].item())
        d_hist.append(sd["d_loss"].item())
    assert all(torch.isfinite(torch.tensor(l1_hist + d_hist)))
    assert sum(l1_hist[-5:]) / 5 < 0.5 * sum(l1_hist[:5]) / 5, l1_hist
    assert "g_adv" in sg and sg["g_adv"].item() > 0
    assert sum(d_hist[-5:]) / 5 < sum(d_hist[:5]) / 5, d_hist


def test_unconditional_discriminator_ignores_cond():
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(5, 3, (8, 16), scales=2, conditional=False)
    x = torch.randn(2, 3, 16, 16)
    a, b = d(torch.randn(2, 5, 16, 16), x), d(torch.randn(2, 5, 16, 16), x)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert parameter_count(d) == patchgan_params(3, (8, 16), 2)
    dc = MultiScaleDiscriminator(5, 3, (8, 16), scales=2)
    a, b = dc(torch.randn(2, 5, 16, 16), x), dc(torch.randn(2, 5, 16, 16), x)
    assert not torch.equal(a[0], b[0])
