#!/usr/bin/env bash
# GPU check of the sweep engine, the fixed-step fast path and the fused Pallas kernel (issue 5),
# in under 5 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a GPU machine
#
# Uses the Python found as $PYTHON (default: python) with JAX for CUDA already installed;
# installs nothing and needs no network. Sets PYTHONPATH=. itself. Four parts, each under its
# own time limit so that the later ones still run if one is slow:
#   1. the paths agree on the GPU: final phases after 200 float32 steps of the naive dense
#      baseline, diffrax RK4, the fast path (dense, sparse), the sweep engine and the fused
#      Pallas kernel variants (surrogate.kernels), 8 x 8 grid; fails if any differs from the
#      baseline by more than 1e-4 in sin(theta) (the CPU gives 3.4e-6, the Pallas kernel in the
#      interpreter 5e-7 after 20 steps; a wrong formula gives > 1e-2), or if a variant does not
#      compile (its error is printed in full, the others still run);
#   2. the fused Pallas kernel: 64 x 64 grid, 5000 steps, variants VARIANT:POINTS:WARPS ($PALLAS)
#      against the naive baseline and the fast sparse path measured in the same run;
#   3. the issue's table: 64 x 64 grid of (beta_self, beta_cross), 5000 steps, Lorenz drive,
#      the plain-JAX variants side by side (with the fast path's loop-structure variants);
#   4. the engine's scaling with grid size (16^2 .. 128^2) and oscillators (100 .. 1000),
#      1000 steps.
# Exit status: 1 if the agreement check failed (or timed out), 0 otherwise.
# Sizes can be overridden to try the script on a CPU, e.g.
#   GRID=4 STEPS=20 CHECK_GRID=4 CHECK_STEPS=20 SCALE_GRID=4,8 SCALE_N=100,200 SCALE_STEPS=20 \
#       bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
GRID=${GRID:-64} STEPS=${STEPS:-5000} CHECK_GRID=${CHECK_GRID:-8} CHECK_STEPS=${CHECK_STEPS:-200}
SCALE_GRID=${SCALE_GRID:-16,32,64,128} SCALE_N=${SCALE_N:-100,200,500,1000}
SCALE_STEPS=${SCALE_STEPS:-1000}
PALLAS=${PALLAS:-dense:1:4,dense:1:8,dense:2:8,gather:1:4,gather:2:4,gather:4:8}
start=$(date +%s)
status=0

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "(no nvidia-smi)"
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1

echo; echo "== 1. the paths agree ($CHECK_STEPS float32 steps, $CHECK_GRID^2 grid)"
if ! timeout 90 "$PY" benchmarks/sweep.py --grid "$CHECK_GRID" --steps 0 --scale-grid "" \
        --scale-n "" --check "$CHECK_STEPS" --check-tol 1e-4 --only naive "diffrax RK4" "fast RK4, dense" \
        "fast RK4, sparse" engine pallas --pallas "$PALLAS"; then
    echo "AGREEMENT CHECK FAILED (or timed out)"
    status=1
fi

echo; echo "== 2. $GRID x $GRID grid, $STEPS steps: fused Pallas kernel"
timeout 80 "$PY" benchmarks/sweep.py --grid "$GRID" --steps "$STEPS" --scale-grid "" \
    --scale-n "" --only naive "fast RK4, sparse" pallas --pallas "$PALLAS" \
    || echo "(part 2 stopped: exit $?)"

echo; echo "== 3. $GRID x $GRID grid, $STEPS steps: plain-JAX variants"
timeout 100 "$PY" benchmarks/sweep.py --grid "$GRID" --steps "$STEPS" --knobs --scale-grid "" \
    --scale-n "" --pallas "" || echo "(part 3 stopped: exit $?)"

echo; echo "== 4. engine scaling ($SCALE_STEPS steps)"
timeout 30 "$PY" benchmarks/sweep.py --steps 0 --scale-grid "$SCALE_GRID" --scale-n "$SCALE_N" \
    --scale-steps "$SCALE_STEPS" --only engine || echo "(part 4 stopped: exit $?)"

echo; echo "== done in $(( $(date +%s) - start )) s, agreement status $status"
exit $status
