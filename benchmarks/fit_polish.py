"""The fit's Levenberg-Marquardt polish against optimistix's, on the bundle of benchmarks/fit.py.

    python benchmarks/fit_polish.py [--layers 28] [--restarts 4] [--steps 300] [--couplings free]

Runs ``surrogate.fit`` three times in one process on a synthetic bundle from known couplings:
with the project's polish (``surrogate.fitting.optimise.polish``: Marquardt's diagonal scaling,
``FitConfig.polish_steps`` steps), with ``optimistix.LevenbergMarquardt`` on the same whitened
residuals (``--optx-steps`` at most), and with no polish. Adam is identical in the three (same
key); reported per run: the best loss, every restart's loss, the largest relative errors of B
and K, and the fit's wall time.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree


def optimistix_polish(max_steps: int):
    """A drop-in for ``optimise.polish`` by ``optimistix.least_squares``."""
    from surrogate.fitting import optimise
    from surrogate.fitting.model import model_attention

    def polish(model, targets, raws, idx, settings, steps):
        del steps
        target = jax.tree.map(lambda x: x[0], targets)  # the same target for every restart
        w = target.weight[..., None] / jnp.maximum(target.weight.sum(), 1)
        kl = settings.divergence == "kl"
        scale = jnp.sqrt(w / (target.mass + 1e-6)) if kl else jnp.sqrt(w)  # as evaluate
        unravel = ravel_pytree(jax.tree.map(lambda x: x[0], raws))[1]

        def residual(x, flat):
            fp = settings.constrain(unravel(flat.at[idx].set(x)))
            return (scale * (model_attention(model, fp) - target.mass)).ravel()

        solver = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-10)

        def one(flat):
            sol = optx.least_squares(residual, solver, flat[idx], args=flat,
                                     max_steps=max_steps, throw=False)
            return flat.at[idx].set(sol.value)

        flats = jax.jit(jax.vmap(one))(jax.vmap(lambda r: ravel_pytree(r)[0])(raws))
        raws = jax.vmap(unravel)(flats)
        return raws, optimise.evaluate(model, targets, raws, idx, settings)

    return polish


def main() -> None:
    from fit import arguments, problem  # benchmarks/fit.py: the same bundle

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--optx-steps", type=int, default=50)
    args = arguments(ap)
    from surrogate import fitting as sf
    from surrogate.fitting import optimise

    config, target, true, key = problem(args)
    B, K = true.B, true.K
    dtype = B.dtype

    own = optimise.polish
    variants = {f"project LM ({config.polish_steps} steps)": own,
                f"optimistix LM (<= {args.optx_steps} steps)": optimistix_polish(args.optx_steps),
                "no polish": lambda m, t, r, i, s, _: own(m, t, r, i, s, 0)}
    print(f"{args.layers} layers, {args.restarts} restarts, {args.couplings} couplings, "
          f"{jax.default_backend()}, dtype {np.dtype(dtype).name}")
    print("| polish | best loss | restart losses | max rel. err. B | K | fit s |")
    print("| --- | --- | --- | --- | --- | --- |")
    try:
        for name, fn in variants.items():
            optimise.polish = fn  # fit() looks the polish up at call time
            t0 = time.perf_counter()
            res = sf.fit(target, key, config.replace(held_out=0))
            sec = time.perf_counter() - t0
            e_b = np.abs(np.asarray(res.params.B) / np.asarray(B) - 1).max()
            e_k = np.abs(np.asarray(res.params.K) / np.asarray(K) - 1).max()
            losses = " ".join(f"{x:.2e}" for x in np.asarray(res.restart_loss))
            print(f"| {name} | {res.loss:.3e} | {losses} | {e_b:.2f} | {e_k:.2f} | {sec:.0f} |")
    finally:
        optimise.polish = own


if __name__ == "__main__":
    main()
