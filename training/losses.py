"""GAN losses and regularisers as pure functions of tensors.

- Non-saturating logistic loss (Goodfellow et al. 2014, sec. 3), as StyleGAN2(-ADA) uses it.
- R1 gradient penalty (Mescheder et al. 2018, "Which Training Methods for GANs do actually
  Converge?", eq. 9) with lazy regularisation (StyleGAN2 sec. 3.1).
- Path-length regularisation (StyleGAN2 sec. 3.2, eq. 4).
- WGAN-GP (Gulrajani et al. 2017, eq. 3) with ProGAN's epsilon drift (Karras et al. 2018, A.1).
- The classic losses: BCE (Goodfellow et al. 2014, eq. 1, with the saturating G loss as an
  option), hinge (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17) and least squares (Mao et al.
  2017, "Least Squares Generative Adversarial Networks", eq. 2 with a=0, b=c=1).
- Mode-seeking regularisation (Mao et al. 2019, "Mode Seeking Generative Adversarial Networks
  for Diverse Image Synthesis", eq. 3), with an optional linear decay of its weight.

No ``.backward()``, no logging, no devices: each function returns a scalar tensor (batch mean) or a
tuple of them; the trainer weights, sums, backpropagates and logs. Losses are computed in
float32 (logits are upcast) so that autocast does not change them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .optim import lr_factor


@dataclass(kw_only=True)
class LossConfig:
    kind: Literal["nonsaturating", "wgan-gp", "bce", "hinge", "lsgan", "wgan"] = "nonsaturating"
    """nonsaturating logistic (StyleGAN2) or WGAN-GP with epsilon drift (ProGAN paper); the
    classic families (mlp, dcgan, wgan, wgan-gp) also take bce (= nonsaturating; see
    g_saturating), hinge, lsgan and wgan (weight clipping, see clip)."""
    r1_gamma: float = 10.0
    """R1 weight gamma (0: no R1)."""
    r1_interval: int = 16
    """Lazy regularisation: R1 every this many D steps, gamma scaled by the interval (1: every step)."""
    pl_weight: float = 2.0
    """Path-length regularisation weight (0: off)."""
    pl_interval: int = 4
    """Path-length regularisation every this many G steps."""
    pl_decay: float = 0.01
    """Decay of the path-length running mean."""
    pl_batch_shrink: int = 2
    """Path-length regularisation runs on batch // this."""
    style_mixing: float = 0.9
    """Probability of style-mixing regularisation (stylegan2; 0: off)."""
    gp_lambda: float = 10.0
    """WGAN-GP gradient-penalty weight."""
    drift: float = 0.001
    """WGAN-GP epsilon drift weight on real logits squared."""
    g_saturating: bool = False
    """kind bce (classic families): G minimises the original saturating log(1 - D(G(z)))."""
    clip: float = 0.01
    """kind wgan: clamp every critic weight to +-clip after each critic update (0: off)."""
    reuse_fakes: bool = False
    """D's first critic round scores the fakes G was just trained on (detached, generated before
    G's update) instead of a fresh batch from the updated G: one G forward less per step (~12 %
    of a CPU step at the digits preset). The PyTorch DCGAN example shares one fake batch between
    its D and G updates the same way; NVlabs generates fresh fakes (False). Not with wgan-gp,
    whose D fakes take the reals' labels."""
    ms_weight: float = 0.0
    """Mode-seeking regularisation weight lambda (Mao et al. 2019; 0: off): G also minimises
    lambda / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5) over the two halves of each
    micro-batch, so that distinct latents give distinct images (against mode collapse)."""
    ms_decay_kimg: float = 0.0
    """Mode seeking's weight falls linearly from ms_weight to 0 at this many kimg (0: constant)."""
    info_weight: float = 1.0
    """InfoGAN mutual-information weight lambda (Chen et al. 2016; their 1 for a categorical
    code), used when ``model.latent_classes`` > 0: G and D's Q head both minimise lambda x the
    cross-entropy of Q's code logits on the fakes against the code each was generated from."""
    info_decay_kimg: float = 0.0
    """InfoGAN's weight falls linearly from info_weight to 0 at this many kimg (0: constant):
    once the code has sorted G's samples into its modes, G answers to D alone (a late Q pressure
    let G signal the code through speckle D had no time to punish; docs/families.md)."""

    def __post_init__(self) -> None:
        for name in (
            "r1_gamma",
            "pl_weight",
            "pl_decay",
            "gp_lambda",
            "drift",
            "style_mixing",
            "clip",
            "ms_weight",
            "ms_decay_kimg",
            "info_weight",
            "info_decay_kimg",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("r1_interval", "pl_interval", "pl_batch_shrink"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {getattr(self, name)}")
        if self.reuse_fakes and self.kind == "wgan-gp":
            raise ValueError(
                "reuse_fakes: not with loss.kind wgan-gp (its D fakes carry the reals' labels, "
                "G's carry shuffled ones); set loss.reuse_fakes=false"
            )
        if self.style_mixing > 1:
            raise ValueError(f"style_mixing: is a probability in [0, 1], got {self.style_mixing}")


# --------------------------------------------------------------------------------------------
# Non-saturating logistic GAN (StyleGAN2)


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``E_z[-log sigmoid(D(G(z)))] = E[softplus(-D(G(z)))]``.

    fake_logits: [N, 1] (or [N]) -> scalar. Non-saturating: strong gradients early in training,
    when D rejects fakes confidently (Goodfellow et al. 2014, sec. 3).
    """
    return F.softplus(-fake_logits.float()).mean()


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``E[softplus(D(G(z)))] + E[softplus(-D(x))]``.

    = -E[log(1 - sigmoid(D(G(z))))] - E[log sigmoid(D(x))]. real_logits, fake_logits: [N, 1] ->
    scalar; the two batches may differ in size (each term is a mean of its own batch).
    """
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = E_x[ ||grad_x D(x)||^2 ] (Mescheder et al. 2018, eq. 9, without gamma / 2).

    real_logits: [N, 1] computed from ``real_images`` [N, C, H, W], which must have had
    ``requires_grad_(True)`` before D (and before augmentation, so that the penalty is on the
    un-augmented reals, as NVlabs). Returns the batch mean of the per-sample squared gradient norm;
    the graph is kept (``create_graph=True``) so that the penalty itself can be backpropagated.
    The caller multiplies by ``gamma / 2 * r1_interval`` (lazy regularisation: the penalty runs
    every ``r1_interval`` D steps, so its weight is scaled up to keep the same strength).
    """
    if not real_images.requires_grad:
        raise ValueError(
            "r1_penalty: real_images must require grad (call real_images.requires_grad_(True) before D)"
        )
    (grad,) = torch.autograd.grad(
        outputs=real_logits.float().sum(), inputs=real_images, create_graph=True
    )
    return grad.float().square().sum(dim=list(range(1, grad.ndim))).mean()


def path_length_penalty(
    fake_images: torch.Tensor,
    ws: torch.Tensor,
    pl_mean: torch.Tensor,
    decay: float = 0.01,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-length regularisation (StyleGAN2 sec. 3.2, eq. 4): ``E_{w,y}(||J_w^T y||_2 - a)^2``.

    fake_images: [N, C, H, W] = synthesis(ws); ws: [N, num_ws, w_dim] (requires grad);
    pl_mean: scalar running mean ``a``; noise: optional y ~ N(0, I) [N, C, H, W] (for tests).
    y is scaled by 1/sqrt(H*W) so the lengths do not depend on the resolution;
    ``J_w^T y = grad_ws sum(images * y)``; the length per sample is
    ``sqrt(mean over layers of sum over w_dim of grad^2)`` (NVlabs).

    Returns (penalty: scalar batch mean of (length - a')^2, new_pl_mean: detached a') where
    a' = lerp(pl_mean, mean length, decay). As NVlabs, the penalty uses the *updated* mean and
    lets gradient flow through it. The caller stores new_pl_mean (a buffer in the checkpoint) and
    multiplies the penalty by ``pl_weight * pl_interval``. new_pl_mean is the local-batch update;
    distributed runs may all-reduce (average) it.
    """
    if noise is None:
        noise = torch.randn_like(fake_images)
    noise = noise / math.sqrt(fake_images.shape[2] * fake_images.shape[3])
    (grad,) = torch.autograd.grad(
        outputs=(fake_images.float() * noise).sum(), inputs=ws, create_graph=True
    )
    lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()  # [N]
    new_pl_mean = pl_mean.float().lerp(lengths.mean(), decay)
    penalty = (lengths - new_pl_mean).square().mean()
    return penalty, new_pl_mean.detach()


def lazy_regularization_adam(
    lr: float, betas: tuple[float, float], interval: int | None
) -> tuple[float, tuple[float, float]]:
    """Adam hyper-parameters for a network regularised every ``interval`` minibatches.

    StyleGAN2 appendix B: with lazy regularisation the optimizer takes interval + 1 steps per
    ``interval`` minibatches, so lr and betas are rescaled by c = interval / (interval + 1):
    ``lr' = c * lr``, ``beta' = beta ** c``. ``interval`` None or 1 (regularised in the main step):
    unchanged.
    """
    if interval is None or interval <= 1:
        return lr, tuple(betas)
    c = interval / (interval + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


# --------------------------------------------------------------------------------------------
# WGAN-GP (ProGAN)


def d_wgan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Critic loss ``E[D(G(z))] - E[D(x)]`` (Arjovsky et al. 2017; Gulrajani et al. 2017 eq. 3)."""
    return fake_logits.float().mean() - real_logits.float().mean()


def g_wgan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``-E[D(G(z))]``."""
    return -fake_logits.float().mean()


def gradient_penalty(
    discriminator_fn: Callable[[torch.Tensor], torch.Tensor],
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    gp_lambda: float = 10.0,
    target: float = 1.0,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``lambda * E_xhat[(||grad D(xhat)||_2 - target)^2] / target^2``.

    Gulrajani et al. 2017, eq. 3 (target 1); ProGAN generalises the target gamma and divides by
    gamma^2 (sec. A.1, used with gamma=750 on CIFAR). xhat = real + alpha * (fake - real), alpha ~
    U[0, 1] per sample (or the given alpha [N]). discriminator_fn: images -> logits [N, 1] (close
    over labels / resolution / fade alpha). fake_images are detached: the penalty trains D only.
    """
    real = real_images.detach()
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.to(real.dtype).reshape(-1, *([1] * (real.ndim - 1)))
    mixed = real.lerp(fake_images.detach().to(real.dtype), alpha).requires_grad_(True)
    logits = discriminator_fn(mixed)
    (grad,) = torch.autograd.grad(outputs=logits.float().sum(), inputs=mixed, create_graph=True)
    norms = grad.float().flatten(1).norm(dim=1)
    return gp_lambda * ((norms - target).square() / (target * target)).mean()


def epsilon_drift(real_logits: torch.Tensor, drift: float = 0.001) -> torch.Tensor:
    """ProGAN drift term ``epsilon * E[D(x)^2]`` (sec. A.1): keeps critic outputs near 0."""
    return drift * real_logits.float().square().mean()


# --------------------------------------------------------------------------------------------
# Classic losses (MLP GAN, DCGAN; LSGAN for CycleGAN). Logits in, scalar batch mean out.


def d_bce_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator BCE ``-E[log D(x)] - E[log(1 - D(G(z)))]`` with ``D = sigmoid(logits)``.

    Goodfellow et al. 2014, eq. 1; the tutorial's ``BCELoss(D(x), 1) + BCELoss(D(G(z)), 0)``.
    Computed from logits (BCE-with-logits: the same maths, stable for confident D), which is
    exactly the logistic loss; one home for it, so this is ``d_logistic_loss``.
    real_logits, fake_logits: [N, 1] -> scalar; each term is the mean over its own batch.
    """
    return d_logistic_loss(real_logits, fake_logits)


def g_bce_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """Generator BCE loss. fake_logits: [N, 1] -> scalar.

    ``saturating=False`` (default, the tutorial's): ``-E[log D(G(z))] = E[softplus(-logits)]``,
    i.e. BCE against the "real" label (Goodfellow et al. 2014, sec. 3: strong gradients early).
    ``saturating=True``: the original minimax objective ``E[log(1 - D(G(z)))]
    = -E[softplus(logits)]``, which G minimises; its gradient vanishes when D rejects fakes.
    """
    if saturating:
        return -F.softplus(fake_logits.float()).mean()
    return g_nonsaturating_loss(fake_logits)


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` (Miyato et al. 2018, eq. 16)."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-E[D(G(z))]`` (Miyato et al. 2018, eq. 17)."""
    return -fake_logits.float().mean()


def d_lsgan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares D loss ``1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]`` (targets 1 / 0).

    Mao et al. 2017, eq. 2 with b=1, a=0; the same as the CycleGAN code's
    ``0.5 * (MSE(D(real), 1) + MSE(D(fake), 0))``. Raw outputs, no sigmoid.
    real_logits: any shape (e.g. PatchGAN [N, 1, h, w]), fake_logits likewise -> scalar.
    """
    real = real_logits.float()
    fake = fake_logits.float()
    return 0.5 * (real - 1.0).square().mean() + 0.5 * fake.square().mean()


def g_lsgan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares G loss ``E[(D(G(z)) - 1)^2]`` (target c=1).

    As the CycleGAN code (``MSE(D(G(x)), 1)``, weight 1 beside the cycle loss); Mao et al.'s
    eq. 2 has a factor 1/2 here, a constant scale of the same objective.
    """
    return (fake_logits.float() - 1.0).square().mean()


# --------------------------------------------------------------------------------------------
# Mode seeking (MSGAN)


def mode_seeking_loss(
    fake_images: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Mode-seeking term ``1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps)``.

    Mao et al. 2019, eq. 3 (MSGAN): G maximises the ratio of the distance between two images to
    the distance between their latents; as in the authors' code the loss is its reciprocal, with
    mean absolute differences. The pairs are the first and second half of the batch
    (fake_images [N, ...] from latents [N, z]; an odd last sample is left out). Scalar; the
    gradient flows into fake_images only (latents are inputs).
    """
    h = fake_images.shape[0] // 2
    if h == 0:
        raise ValueError("mode_seeking_loss: needs a batch of at least 2 samples")
    images = fake_images.float()
    z = latents.detach().float()
    image_dist = (images[:h] - images[h : 2 * h]).abs().mean()
    latent_dist = (z[:h] - z[h : 2 * h]).abs().mean()
    return 1.0 / (image_dist / latent_dist + eps)


def decaying_weight(weight: float, decay_kimg: float, images_seen: int) -> float:
    """A regulariser's lambda at this point of training (mode seeking, InfoGAN's code term):
    ``weight * max(0, 1 - kimg / decay_kimg)``, or ``weight`` throughout when decay_kimg is 0
    (the learning-rate ramp's ``lr_factor``)."""
    return weight * lr_factor(images_seen, round(decay_kimg * 1000), 0)


def info_loss(code_logits: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """InfoGAN's mutual-information term for a categorical code (Chen et al. 2016, eq. 5): the
    cross-entropy of Q's logits [N, k] against the codes [N] the fakes were generated from, a
    mean over the batch. Minimising it maximises the variational lower bound L_I(G, Q) up to the
    code's constant entropy log k."""
    return F.cross_entropy(code_logits.float(), code)
