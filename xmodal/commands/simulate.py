"""``xmodal simulate``: integrate one surrogate and write trajectory, metrics and a figure."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from xmodal.arguments import (
    add_float64,
    add_out,
    add_seed,
    finite_float,
    nonnegative_float,
    positive_float,
    positive_int,
    sizes_list,
)
from xmodal.report import (
    atomic_write_json,
    atomic_write_npz,
    check_memory,
    check_out_file,
    check_steps,
    prepare_out,
    versions,
)

HELP = "integrate one surrogate; write trajectory.npz, metrics.json, simulate.png"
DESCRIPTION = (
    "Integrate the attention surrogate (paper preset: K = B blockwise) and write the trajectory "
    "(.npz), its metrics (JSON) and an order-parameter/phase figure (PNG).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["paper"], default="paper", help="parameter preset")
    p.add_argument("--beta-self", type=finite_float, default=1.0, help="beta_self (= kappa_self)")
    p.add_argument("--beta-cross", type=finite_float, default=0.1,
                   help="beta_cross (= kappa_cross)")
    p.add_argument("--sizes", type=sizes_list, default=(50, 50), help="oscillators per modality")
    p.add_argument("--omega-spread", type=finite_float, default=1.0, help="std of omega (rad/time)")
    p.add_argument("--anchor", type=nonnegative_float, default=4.0,
                   help="input anchoring strength h (default 4, the Lorenz presets; 0: none)")
    p.add_argument("--encoding-scale", type=positive_float, default=math.pi / 2,
                   help="encoding gains c_i ~ N(0, scale^2) of the anchoring (default pi/2)")
    p.add_argument("--bundle", type=Path, metavar="FILE",
                   help="also write the modality-block attention as an attention bundle at the "
                   "fit's default layer times t_l = 4 (l + 1) / L (the fit's forward model, this "
                   "seed's realization, constant unit drive): a test bed for `xmodal fit`")
    p.add_argument("--layers", type=positive_int, default=8, help="layers L of --bundle")
    p.add_argument(
        "--normalisation", choices=["softmax", "mean", "none"], default="softmax",
        help="attention normalisation Z_i",
    )
    p.add_argument("--duration", type=positive_float, default=50.0, help="time span (units)")
    p.add_argument("--dt", type=positive_float, default=0.01, help="step size")
    p.add_argument("--save-every", type=positive_int, default=10, help="save every n-th step")
    p.add_argument("--path", choices=["fast", "diffrax"], default="fast", help="integration path")
    add_float64(p, "integrate in float64")
    add_seed(p)
    add_out(p, default="results/simulate")


def run(args: argparse.Namespace) -> int:
    n_steps = round(args.duration / args.dt)
    if n_steps < args.save_every:
        raise ValueError(
            f"--duration {args.duration} / --dt {args.dt} gives {n_steps} steps, fewer than "
            f"--save-every {args.save_every}"
        )
    n_steps -= n_steps % args.save_every
    if min(args.sizes) <= 10:  # the preset's Watts-Strogatz degree inside each modality
        raise ValueError(f"--sizes {','.join(map(str, args.sizes))}: each modality needs more "
                         f"than 10 oscillators (the paper preset links each to its 10 nearest)")
    check_steps(n_steps, f"--duration {args.duration} / --dt {args.dt}")
    n, m = sum(args.sizes), len(args.sizes)
    item = 8 if args.float64 else 4
    frames = n_steps // args.save_every + 1  # phases, R and attention per frame, ~3 copies
    check_memory(3 * frames * (n + m + m * m) * item + 8 * n * n * item,
                 f"--sizes {','.join(map(str, args.sizes))} with {frames} saved frames "
                 f"(--duration / --dt / --save-every)")
    if args.bundle is not None:
        if len(args.sizes) != 2:
            raise ValueError(f"--bundle writes two modalities (audio, vision); --sizes "
                             f"{','.join(map(str, args.sizes))} has {len(args.sizes)}")
        check_out_file(args.bundle, "--bundle")
    out = prepare_out(args.out, force=args.force)
    print(f"simulate: {n_steps} steps of {n} oscillators, {frames} saved frames; compiling, "
          f"then integrating", file=sys.stderr, flush=True)

    import diffrax
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import surrogate as sg

    dtype = jnp.float64 if args.float64 else jnp.float32
    k_model, k_theta = jax.random.split(jax.random.key(args.seed))
    sur = sg.paper_preset(
        k_model, args.beta_self, args.beta_cross, sizes=args.sizes,
        omega_spread=args.omega_spread, normalisation=args.normalisation, dtype=dtype,
        anchor=args.anchor, encoding_scale=args.encoding_scale,
    )
    theta0 = sg.initial_phases(k_theta, sur.network.n, dtype)
    solver = diffrax.Tsit5() if args.path == "diffrax" else sg.FixedStep()
    traj = jax.jit(
        lambda s, th: sg.simulate(
            s, th, dt=args.dt, n_steps=n_steps, save_every=args.save_every, solver=solver
        )
    )(sur, theta0)
    r = jax.vmap(sg.order_parameter, (0, None))(traj.ys, sur)
    p = jax.vmap(sg.modality_attention, (0, None))(traj.ys, sur)
    half = traj.ys.shape[0] // 2  # time averages over the second half (after the transient)
    p_mean = p[half:].mean(0)
    metrics = {
        "command": "simulate",
        "parameters": {
            k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items() if k != "run"
        },
        "n_steps": n_steps,
        "order_parameter_final": np.asarray(r[-1]).tolist(),
        "order_parameter_mean": np.asarray(r[half:].mean(0)).tolist(),
        "modality_attention_mean": np.asarray(p_mean).tolist(),
        "cross_share_mean": np.asarray(p_mean.sum(-1) - jnp.diagonal(p_mean)).tolist(),
        "dominance_01": float(sg.metrics.dominance_index(p_mean, 0, 1)),
        "graph_density": sur.network.density,
        "versions": versions(),
    }
    atomic_write_npz(
        out / "trajectory.npz", ts=traj.ts, theta=traj.ys, order_parameter=r,
        modality_attention=p, population=sur.network.population,
        adjacency=sur.network.adjacency, omega=sur.params.omega, B=sur.params.B, K=sur.params.K,
    )
    atomic_write_json(out / "metrics.json", metrics)
    _figure(out / "simulate.png", np.asarray(traj.ts), np.asarray(traj.ys), np.asarray(r),
            np.asarray(p), sur.network.sizes, args)
    print(f"order parameter (mean, 2nd half) per modality: "
          f"{np.round(metrics['order_parameter_mean'], 3).tolist()}")
    print(f"cross-modal attention share per modality: "
          f"{np.round(metrics['cross_share_mean'], 3).tolist()}; "
          f"dominance D_01 = {metrics['dominance_01']:+.4f}")
    print(f"wrote {out}/trajectory.npz, metrics.json, simulate.png")
    if args.bundle is not None:
        _write_bundle(args, dtype)
        print(f"wrote {args.bundle} ({args.layers} layers at t_l = 4 (l + 1) / {args.layers})")
    return 0


def _write_bundle(args: argparse.Namespace, dtype) -> None:
    """The fit's forward model at this run's couplings, realization of ``--seed``, as a bundle."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mllm_probe.bundle import save_bundle, shares_bundle
    from surrogate import block_matrix
    from surrogate import fitting as sf

    config = sf.FitConfig(sizes=tuple(args.sizes), k=10, p=0.01, cross_density=0.1,
                          normalisation=args.normalisation, anchored=args.anchor > 0,
                          anchor=args.anchor, encoding_scale=args.encoding_scale)
    m = len(args.sizes)
    B = block_matrix(args.beta_self, args.beta_cross, m, dtype)
    times = sf.layer_times(jnp.zeros((0,), dtype), args.layers, config.horizon, dtype)
    params = sf.FitParams(B=B, K=B, omega_spread=jnp.asarray(args.omega_spread, dtype),
                          gain=jnp.zeros((m,), dtype), anchor=jnp.asarray(args.anchor, dtype),
                          times=times)
    shares = sf.synthetic_shares(jax.random.key(args.seed), params, config)
    hints = {"command": "xmodal simulate", "seed": args.seed, "sizes": list(args.sizes),
             "k": config.k, "p": config.p, "cross_density": config.cross_density,
             "normalisation": args.normalisation, "anchor": args.anchor,
             "encoding_scale": args.encoding_scale, "omega_spread": args.omega_spread,
             "beta_self": args.beta_self, "beta_cross": args.beta_cross,
             "B": np.asarray(B).tolist(), "K": np.asarray(B).tolist(), "gain": [0.0] * m,
             "horizon": config.horizon, "dt": config.dt,
             "layer_times": np.asarray(times).tolist(),
             "drive": "constant unit drive per modality"}
    save_bundle(args.bundle, shares_bundle(shares, config.modalities, args.sizes,
                                           extra={"surrogate": hints}))


def _figure(path, ts, ys, r, p, sizes, args) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from xmodal.report import atomic_savefig

    fig = Figure(figsize=(14, 3.8), layout="constrained")
    ax = fig.subplots(1, 3)
    for m in range(r.shape[1]):
        ax[0].plot(ts, r[:, m], label=f"modality {m}")
        ax[2].plot(ts, p[:, m].sum(-1) - p[:, m, m], label=f"modality {m}")
    ax[0].set(xlabel="t", ylabel="order parameter R", ylim=(0, 1.02), title="synchrony")
    ax[0].legend()
    im = ax[1].imshow(np.sin(ys.T), aspect="auto", origin="lower", cmap="twilight",
                      extent=(ts[0], ts[-1], 0, ys.shape[1]))
    for edge in np.cumsum(sizes)[:-1]:
        ax[1].axhline(edge, color="k", lw=0.8)
    ax[1].set(xlabel="t", ylabel="oscillator", title="sin(theta)")
    fig.colorbar(im, ax=ax[1])
    ax[2].set(xlabel="t", ylabel="cross-modal attention share", title="cross-attention")
    ax[2].legend()
    fig.suptitle(f"surrogate, beta_self={args.beta_self:g}, beta_cross={args.beta_cross:g}")
    atomic_savefig(fig, path)
