"""CycleGAN objectives in keras.ops, over callables, so the TensorFlow step (models called directly) and the JAX
step (models called statelessly with explicit weights) share them.

A is benign, B malignant: G = g_ab (benign -> malignant), F = g_ba, discriminators D_A and D_B.
"""

from __future__ import annotations

from keras import ops


def lsgan(scores, real: bool):
    """Least-squares GAN loss: the mean squared distance of the patch scores from 1 (real) or 0 (fake)."""
    return ops.mean(ops.square(scores - (1.0 if real else 0.0)))


def l1(x, y):
    return ops.mean(ops.abs(x - y))


def generator_objective(G, F, D_A, D_B, a, b, cycle_weight: float, identity_weight: float):
    """(total, parts, (fake_a, fake_b)): fool both discriminators, come back by the cycle, leave the target
    domain unchanged (identity)."""
    fake_b, fake_a = G(a), F(b)
    adversarial = lsgan(D_B(fake_b), True) + lsgan(D_A(fake_a), True)
    cycle = l1(F(fake_b), a) + l1(G(fake_a), b)
    total = adversarial + cycle_weight * cycle
    identity = ops.zeros(())
    if identity_weight > 0:  # two more generator passes: skipped when the weight is 0
        identity = l1(G(b), b) + l1(F(a), a)
        total = total + identity_weight * identity
    return total, {"g_adversarial": adversarial, "cycle": cycle, "identity": identity}, (fake_a, fake_b)


def discriminator_objective(D_A, D_B, a, b, fake_a, fake_b):
    """Each discriminator: real images to 1, the generators' images (held constant) to 0; halved as in CycleGAN
    so the discriminators learn more slowly than the generators."""
    fake_a, fake_b = ops.stop_gradient(fake_a), ops.stop_gradient(fake_b)
    return 0.5 * (lsgan(D_A(a), True) + lsgan(D_A(fake_a), False)) + \
        0.5 * (lsgan(D_B(b), True) + lsgan(D_B(fake_b), False))
