#!/usr/bin/env bash
# GPU check of the sweep engine, the fixed-step fast path and the fused Pallas kernel (issue 5),
# the Lorenz plane and the phases' sines and cosines (issue 24), in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a GPU machine
#
# Uses the Python found as $PYTHON (default: python) with JAX for CUDA already installed;
# installs nothing and needs no network. Sets PYTHONPATH=. itself. Seven parts, each under its
# own time limit (about 470 s in all) so that the later ones still run if one is slow; a variant
# that fails to compile or run prints its error in full and the others go on:
#   1. the plain-JAX paths agree on the GPU: final phases after 200 float32 steps of the naive
#      dense baseline, diffrax RK4, the fast path (dense, sparse), simulate_batch (points on
#      the minor axis; untimed on a GPU so far) and the sweep engine, 8 x 8
#      grid; fails if any differs from the baseline by more than 1e-4 in sin(theta) (the CPU
#      gives 3.4e-6; a wrong formula gives > 1e-2);
#   2. the fused Pallas kernel (surrogate.kernels) agrees with the fast sparse path: same
#      problem, settings $PALLAS_CHECK; fails above 2e-5 in sin(theta) (measured on an H100:
#      5e-7..1e-6; no matmul enters, so no TF32) or if a setting does not run;
#   3. the Pallas kernel timed: 64 x 64 grid, 5000 steps, settings $PALLAS, against the naive
#      baseline, the fast sparse path and simulate_batch measured in the same run (target:
#      <= 0.5 s);
#   4. the issue's table: 64 x 64 grid of (beta_self, beta_cross), 5000 steps, Lorenz drive,
#      the plain-JAX variants side by side, compile apart;
#   (3 and 4 time the first run after an ahead-of-time compile, --no-warmup, to fit the budget)
#   5. the engine's scaling with grid size (16^2 .. 128^2) and oscillators (100 .. 1000),
#      1000 steps;
#   6. the Lorenz observer plane (benchmarks/lorenz_plane.py --before, 64 points, the default
#      series): the batched engine against the per-point path and the code before, point-steps/s,
#      equal results;
#   7. surrogate.trig.sincos against XLA's sin and cos (benchmarks/trig.py).
# Pallas settings are POINTS_PER_PROGRAM:NUM_WARPS[:rcROWS_PER_CHUNK][:r1] (benchmarks/
# sweep.py --help). On an H100 at 1000 steps, before input anchoring: 16:4:rc16 0.245 s,
# 16:4:rc8 0.30 s, 32:8:rc8 0.256 s, 32:8:rc16 0.51 s, plain-JAX fast sparse 0.46 s. Two
# programs of 4 warps per SM beat one of 8, so part 3 tries more, smaller programs (8 points,
# 2 warps), larger row chunks, and r1 (one reduction per chunk). The problem is anchored
# (h = 4, the Lorenz experiment's default; benchmarks/sweep.py --anchor).
# Exit status: 1 if an agreement check failed (or timed out), 0 otherwise.
# Sizes can be overridden to try the script on a CPU (the Pallas parts then need
# PALLAS_FLAGS=--pallas-interpret), e.g.
#   GRID=2 STEPS=10 CHECK_GRID=2 CHECK_STEPS=10 SCALE_GRID=4 SCALE_N=100 SCALE_STEPS=10 PLANE_GRID=2 PLANE_TRAIN=250 \
#       PALLAS=4:4 PALLAS_CHECK=4:4 PALLAS_FLAGS=--pallas-interpret \
#       bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
GRID=${GRID:-64} STEPS=${STEPS:-5000} CHECK_GRID=${CHECK_GRID:-8} CHECK_STEPS=${CHECK_STEPS:-200}
SCALE_GRID=${SCALE_GRID:-16,32,64,128} SCALE_N=${SCALE_N:-100,200,500,1000}
SCALE_STEPS=${SCALE_STEPS:-1000}
PALLAS=${PALLAS:-16:4:rc16,16:4:rc16:r1,8:4:rc16,8:4:rc16:r1,8:4:rc32,8:2:rc16}
PALLAS_CHECK=${PALLAS_CHECK:-16:4:rc16,16:4:rc16:r1}
PALLAS_FLAGS=${PALLAS_FLAGS:-}
start=$(date +%s)
status=0

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "(no nvidia-smi)"
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1

echo; echo "== 1. the plain-JAX paths agree ($CHECK_STEPS float32 steps, $CHECK_GRID^2 grid)"
if ! timeout 70 "$PY" benchmarks/sweep.py --grid "$CHECK_GRID" --steps 0 --scale-grid "" \
        --scale-n "" --check "$CHECK_STEPS" --check-tol 1e-4 --only naive "diffrax RK4" \
        "fast RK4, dense" "fast RK4, sparse" batched engine --pallas ""; then
    echo "AGREEMENT CHECK FAILED (or timed out)"
    status=1
fi

echo; echo "== 2. the Pallas kernel agrees with the fast path ($CHECK_STEPS float32 steps)"
if ! timeout 50 "$PY" benchmarks/sweep.py --grid "$CHECK_GRID" --steps 0 --scale-grid "" \
        --scale-n "" --check "$CHECK_STEPS" --check-tol 2e-5 --only "fast RK4, sparse" pallas \
        --pallas "$PALLAS_CHECK" $PALLAS_FLAGS; then
    echo "PALLAS AGREEMENT CHECK FAILED (or timed out)"
    status=1
fi

echo; echo "== 3. $GRID x $GRID grid, $STEPS steps: the fused Pallas kernel"
timeout 95 "$PY" benchmarks/sweep.py --grid "$GRID" --steps "$STEPS" --no-warmup \
    --scale-grid "" --scale-n "" --only naive "fast RK4, sparse" batched pallas --pallas "$PALLAS" $PALLAS_FLAGS \
    || echo "(part 3 stopped: exit $?)"

echo; echo "== 4. $GRID x $GRID grid, $STEPS steps: plain-JAX variants"
timeout 50 "$PY" benchmarks/sweep.py --grid "$GRID" --steps "$STEPS" --no-warmup \
    --scale-grid "" --scale-n "" --pallas "" || echo "(part 4 stopped: exit $?)"

echo; echo "== 5. engine scaling ($SCALE_STEPS steps)"
timeout 20 "$PY" benchmarks/sweep.py --steps 0 --scale-grid "$SCALE_GRID" --scale-n "$SCALE_N" \
    --scale-steps "$SCALE_STEPS" --only engine || echo "(part 5 stopped: exit $?)"

echo; echo "== 6. the Lorenz observer plane: lanes against per-point and the code before"
timeout 150 "$PY" benchmarks/lorenz_plane.py --grid "${PLANE_GRID:-8}" --train "${PLANE_TRAIN:-2000}" \
    --repeat 1 --before || echo "(part 6 stopped: exit $?)"

echo; echo "== 7. sin and cos of the phases: surrogate.trig against XLA"
timeout 30 "$PY" benchmarks/trig.py --lanes 4096 --iterations 200 || echo "(part 7 stopped: exit $?)"

echo; echo "== done in $(( $(date +%s) - start )) s, agreement status $status"
exit $status
