#!/usr/bin/env bash
# The GPU checks of the ALIGNN-style model: one short script for a lent GPU machine
# (device time is scarce: ~15 minutes in all), run from the repository root there:
#
#   MATGNN_BENCH_COMMIT=<sha of the clean commit sent> bash benchmarks/gpu_checks.sh
#
# What travels with it (prepared here by `bash benchmarks/gpu_checks.sh --prepare`, both git-ignored
# through .git/info/exclude): .whl/ (wheels of what the machine's image lacks: pydantic, vesin, lmdb,
# ase, pymatgen, jarvis-tools, alignn, ...) and .gpudata/ (../shared/data's dft_2d zip, the MP CIF
# lines and the MEGNet split). The benchmarks run at once, each under a deadline, each writing its
# results file as it goes (a killed one keeps what it finished):
#   - alignn_compare.py --device cuda: ours vs ALIGNN's own release on the GPU, dft_2d folds, equal epochs
#   - mp_megnet.py --family alignn --device cuda: MEGNet-MP e_form and gap on the full 31,624 training
#     structures (time-budgeted, one-cycle planned over the epochs that fit), e_form curve at 3k / 10k
#   - (EXFOLIATION=1 only) dft2d_exfoliation.py --device cuda: exfoliation energy, every family, 5-fold
# Results, logs and run histories come back in $OUT (results.tgz + logs).
set -u
if [ "${1:-}" = "--prepare" ]; then  # here, on the development machine
    set -e
    grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
    grep -qx '/.gpudata/' .git/info/exclude || echo /.gpudata/ >> .git/info/exclude
    mkdir -p .whl .gpudata/jarvis .gpudata/mp_cgcnn
    cp ../shared/data/jarvis/d2-12-12-2022.json.zip .gpudata/jarvis/
    cp ../shared/data/mp_cgcnn/mp_cgcnn.jsonl.gz ../shared/data/mp_cgcnn/megnet_leaderboard_split.jsonl.gz .gpudata/mp_cgcnn/
    plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
    plat="$plat --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
    for w in pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
             typing_extensions==4.16.0 vesin==0.6.2 lmdb==3.0.0 ase==3.29.0 pymatgen==2026.10.24 \
             pymatgen-core==2026.10.16 monty==2026.10.21 spglib==2.8.0 ruamel.yaml==0.19.1 uncertainties==3.2.3 \
             palettable==3.3.3 orjson==3.13.0 jarvis-tools==2026.6.12 xmltodict alignn==2026.8.11 \
             pydantic-settings python-dotenv; do
        python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl "$w"
    done
    du -sh .whl .gpudata
    exit 0
fi

export PYTHONUNBUFFERED=1
# the device machine's copy of .git has been the starting commit, older than the tree sent with it:
# then the benchmarks take the tree as a copy of the sent commit instead of refusing it as "dirty"
if [ -n "${MATGNN_BENCH_COMMIT:-}" ] && [ "$(git rev-parse HEAD 2>/dev/null)" != "$MATGNN_BENCH_COMMIT" ]; then
    echo "this copy's .git is not at the sent commit: the benchmarks name $MATGNN_BENCH_COMMIT (the sender checked it clean)"
    export MATGNN_BENCH_IGNORE_GIT=1
fi
OUTDIR=${OUT:-/tmp/gpu_checks_out}
mkdir -p "$OUTDIR"
START=$(date +%s)
BUDGET=${GPU_SECONDS:-540}   # everything below ends by then (the device command's limit is 600 s)
left() { echo $((BUDGET - ($(date +%s) - START))); }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH
export MATGNN_SHARED_DATA=$PWD/.gpudata MATGNN_CACHE_DIR=/tmp/matgnn-cache ALIGNN_PYTHON=python3
export MATGNN_GPU_SCRIPT=benchmarks/gpu_checks.sh COLUMNS=1000
nvidia-smi -L
python3 -c "import torch, torch_geometric, vesin, pymatgen.core, jarvis, alignn, matgnn.training.run as r; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pyg', torch_geometric.__version__)" \
    || { echo "imports failed"; exit 1; }

# the dft_2d graph cache both dft_2d benchmarks read, built once before they start together
python3 -c "import os; from matgnn.config import RunConfig; from matgnn.data.sources import make_source; \
from matgnn.graphs.cache import build_graph_cache; c = RunConfig.model_validate({'source': {'kind': 'jarvis', \
'dataset': 'dft_2d', 'store_dir': os.environ['MATGNN_SHARED_DATA'] + '/jarvis'}, 'graphs': {'cutoff': 8.0, \
'max_neighbors': 12}}); print(build_graph_cache(make_source(c.source), c.graphs, progress=False).path)"
EXF_JOBS=${EXF_JOBS:-6}
timeout $(( $(left) - 20 )) python3 benchmarks/alignn_compare.py --device cuda --folds ${COMPARE_FOLDS:-5} \
    --epochs 30 --threads 2 --quiet-epochs 0 > "$OUTDIR/log_alignn_compare.txt" 2>&1 &
timeout $(( $(left) - 20 )) python3 benchmarks/mp_megnet.py --family alignn --device cuda --epochs 60 \
    --max-minutes ${MEGNET_MINUTES:-5.5} --jobs 4 --threads 1 --loader-workers 1 \
    --tasks megnet_e_form,megnet_gappbe --sizes 3000,10000 > "$OUTDIR/log_mp_megnet_alignn.txt" 2>&1 &
if [ "${EXFOLIATION:-0}" = 1 ]; then  # every family was measured on the CPU (dft2d_exfoliation.json); off by default
    timeout $(( $(left) - 20 )) python3 benchmarks/dft2d_exfoliation.py --device cuda \
        --models alignn,pna,cgcnn,schnet,dimenet++,cgconv_net,zoo:transformerconv --jobs "$EXF_JOBS" --threads 1 \
        --max-minutes ${EXF_MINUTES:-1.0} > "$OUTDIR/log_dft2d_exfoliation.txt" 2>&1 &
fi
(sleep 150; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv > "$OUTDIR/nvidia_smi_150s.txt") &
while [ -n "$(jobs -r)" ] && [ "$(left)" -gt 15 ]; do sleep 5; done
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv
tar czf "$OUTDIR/results.tgz" benchmarks/results/alignn_compare_gpu.json benchmarks/results/mp_megnet_alignn.json \
    benchmarks/results/dft2d_exfoliation.json $(find benchmarks/runs -name history.csv -o -name metrics.json \
    -o -name 'log.txt' 2>/dev/null) 2>/dev/null
ls -la "$OUTDIR"; tail -5 "$OUTDIR"/log_*.txt
echo "gpu checks done in $(( $(date +%s) - START )) s"
