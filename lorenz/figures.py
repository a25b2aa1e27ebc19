"""Figures of the Lorenz experiment (matplotlib figures without pyplot); each written atomically
as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["arrow_angle", "write_figures"]


def arrow_angle(phi_x, phi_y):
    """Arrow angle (radians) in [-pi/2, pi/2] drawing phi_Y - phi_X as the paper does: 0
    (right) when the attributions balance, pi/2 (up) when Y alone explains the readout, -pi/2
    (down) when X does. It is pi/2 d with d = (phi_Y - phi_X) / (|phi_X| + |phi_Y|)."""
    phi_x, phi_y = np.asarray(phi_x), np.asarray(phi_y)
    d = (phi_y - phi_x) / np.maximum(np.abs(phi_x) + np.abs(phi_y), 1e-12)
    return np.pi / 2 * d


def _subplots(*grid, **kw):
    """(figure, axes) of a ``matplotlib.figure.Figure``: no pyplot, so the caller's backend and
    figure registry are left alone."""
    from matplotlib.figure import Figure

    constrained = kw.pop("constrained_layout", False)
    shared = {k: kw.pop(k) for k in ("sharex", "sharey", "squeeze") if k in kw}
    fig = Figure(layout="constrained" if constrained else None, **kw)
    return fig, fig.subplots(*grid, **shared)


def _save(fig, path):
    from surrogate.files import atomic_savefig

    atomic_savefig(fig, path)


def _log_extent(betas):
    lb = np.log10(betas)
    step = lb[1] - lb[0]
    return (lb[0] - step / 2, lb[-1] + step / 2, lb[0] - step / 2, lb[-1] + step / 2)


def phase_map(path, betas, nmse, phi, marks=()):
    """NMSE heat map over (log beta_cross, log beta_self) with Shapley arrows; ``marks``: fitted
    couplings to draw, dicts with ``label``, ``beta_self``, ``beta_cross`` and optional ranges
    ``self_range``, ``cross_range`` (low, high) drawn as error bars."""
    lb = np.log10(betas)
    fig, ax = _subplots(figsize=(6.4, 5.2), constrained_layout=True)
    im = ax.imshow(np.log10(nmse), origin="lower", cmap="viridis_r", extent=_log_extent(betas),
                   aspect="auto")
    fig.colorbar(im, ax=ax, label="log10 NMSE (test, geometric mean over replications)")
    angle = arrow_angle(phi[..., 0], phi[..., 1])
    xx, yy = np.meshgrid(lb, lb)  # rows: beta_self, columns: beta_cross
    ax.quiver(xx, yy, np.cos(angle), np.sin(angle), angles="uv", pivot="middle", color="w",
              scale=1.6 * len(betas), width=0.004)
    _draw_marks(ax, marks, _log_extent(betas))
    ax.set(xlabel="log10 beta_cross", ylabel="log10 beta_self",
           title="observer NMSE; arrows (v = -log10 NMSE): right = balanced, up = Y "
                 "dominates, down = X")
    ax.title.set_fontsize(9)
    _save(fig, path)


def _draw_marks(ax, marks, extent):
    """Each mark at (log10 beta_cross, log10 beta_self), clipped to the plane (an open marker
    and "outside" in the legend when clipped), with its ranges as error bars."""
    lo, hi = extent[0], extent[1]
    for i, m in enumerate(marks):
        x, y = np.log10(m["beta_cross"]), np.log10(m["beta_self"])
        cx, cy = float(np.clip(x, lo, hi)), float(np.clip(y, lo, hi))
        inside = (cx, cy) == (x, y)
        err = {}
        for axis, key, c in (("xerr", "cross_range", cx), ("yerr", "self_range", cy)):
            if m.get(key) is not None and inside:
                a, b = np.clip(np.log10(m[key]), lo, hi)
                err[axis] = [[max(c - a, 0)], [max(b - c, 0)]]
        ax.errorbar(cx, cy, **err, fmt="o" if inside else "X", ms=9, mfc=f"C{i % 10}"
                    if inside else "none", mec="k", ecolor="k", capsize=3,
                    clip_on=inside, label=m["label"] + ("" if inside else " (outside the plane)"))
    if marks:
        ax.set(xlim=(lo, hi), ylim=(lo, hi))
        ax.legend(fontsize=7, loc="upper left")


def shapley_map(path, betas, phi):
    fig, ax = _subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    diff = phi[..., 1] - phi[..., 0]
    for a, data, title in ((ax[0], phi[..., 0], "phi_X"), (ax[1], phi[..., 1], "phi_Y"),
                           (ax[2], diff, "phi_Y - phi_X")):
        lim = max(np.nanmax(np.abs(data)), 1e-12)
        im = a.imshow(data, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                      extent=_log_extent(betas), aspect="auto")
        fig.colorbar(im, ax=a)
        a.set(xlabel="log10 beta_cross", ylabel="log10 beta_self", title=title)
    _save(fig, path)


def prediction(path, ts, z, preds, test):
    fig, ax = _subplots(len(preds), 1, figsize=(10, 2.6 * len(preds)), sharex=True,
                        constrained_layout=True, squeeze=False)
    for a, (name, p) in zip(ax[:, 0], preds.items(), strict=False):
        a.plot(ts[test], z[test], "k", lw=1.2, label="true z")
        a.plot(ts[test], p["z_hat"][test], "C1", lw=1, label="surrogate readout")
        a.set(ylabel="z", title=f"{name}: beta_self={p['beta_self']:.2g}, "
              f"beta_cross={p['beta_cross']:.2g}, test NMSE={p['nmse']:.3g}")
        a.legend(loc="upper right", fontsize=8)
    ax[-1, 0].set_xlabel("t (Lorenz time units)")
    _save(fig, path)


def attractor(path, raw, z_hat, test):
    fig, ax = _subplots(1, 2, figsize=(10, 4.2), sharex=True, sharey=True,
                        constrained_layout=True)
    ax[0].plot(raw[test, 0], raw[test, 2], "k", lw=0.6)
    ax[0].set(title="true (x, z)", xlabel="x", ylabel="z")
    ax[1].plot(raw[test, 0], z_hat[test], "C1", lw=0.6)
    ax[1].set(title="reconstructed (x, z_hat), best point", xlabel="x")
    _save(fig, path)


def lyapunov_map(path, betas, lyap, title):
    """Largest conditional Lyapunov exponent over the plane (negative: the echo-state property)."""
    fig, ax = _subplots(figsize=(6.4, 5.2), constrained_layout=True)
    lim = max(np.nanmax(np.abs(lyap)), 1e-12)
    im = ax.imshow(lyap, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   extent=_log_extent(betas), aspect="auto")
    fig.colorbar(im, ax=ax, label="largest conditional exponent (1 / time unit)")
    ax.set(xlabel="log10 beta_cross", ylabel="log10 beta_self", title=title)
    ax.title.set_fontsize(9)
    _save(fig, path)


def anchor_scan(path, scan):
    """Test NMSE against anchor strength h, one line per coupling K."""
    fig, ax = _subplots(figsize=(6.4, 4.4), constrained_layout=True)
    nmse = np.asarray(scan["nmse"])
    for k, kappa in enumerate(scan["kappas"]):
        ax.loglog(scan["anchors"], nmse[:, k], "o-", label=f"K = {kappa:g}")
    ax.set(xlabel="anchor strength h", ylabel="test NMSE",
           title=f"observer NMSE against anchoring and coupling (B = {scan['beta']:g})")
    ax.legend(fontsize=8)
    _save(fig, path)


def echo(path, preds):
    """Distance of two copies from different phases under one drive, best and worst points."""
    fig, ax = _subplots(figsize=(6.4, 4.0), constrained_layout=True)
    for name, p in preds.items():
        ax.semilogy(p["echo_ts"], np.maximum(p["echo_distance"], 1e-16), label=name)
    ax.set(xlabel="t (Lorenz time units)", ylabel="phase distance of the two copies",
           title="echo-state property: two copies, one drive")
    ax.legend(fontsize=8)
    _save(fig, path)


def write_figures(out: Path, res, marks=()) -> list[str]:
    """The experiment's figures from a ``LorenzResult`` in ``out``; returns their file names.
    ``marks``: fitted couplings drawn on the phase maps (see ``phase_map``)."""
    out = Path(out)
    betas, raw, preds = res.betas, res.series_raw, res.preds
    c = res.config
    test = slice(c.washout + c.train + c.val, c.washout + c.train + c.val + c.test)
    names = []
    for reading, plane in res.planes.items():
        nmse = np.exp(np.log(plane.obs.test[..., 0]).mean((0, 1)))
        phi = plane.obs.phi("log").mean((0, 1))
        phase_map(out / f"phase_map_{reading}.png", betas, nmse, phi, marks)
        shapley_map(out / f"shapley_{reading}.png", betas, phi)
        names += [f"phase_map_{reading}.png", f"shapley_{reading}.png"]
        if res.lyapunov is not None:
            lyapunov_map(out / f"lyapunov_{reading}.png", betas, res.lyapunov[reading],
                         f"largest conditional Lyapunov exponent ({reading} coupling)")
            names.append(f"lyapunov_{reading}.png")
    prediction(out / "prediction.png", res.ts, raw[:, 2], preds, test)
    attractor(out / "attractor.png", raw, preds["best"]["z_hat"], test)
    anchor_scan(out / "anchor.png", res.anchor_scan)
    echo(out / "echo.png", preds)
    return names + ["prediction.png", "attractor.png", "anchor.png", "echo.png"]
