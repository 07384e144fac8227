#!/usr/bin/env bash
# GPU readiness check, for a CUDA machine (CI has none). From the repository root:
#   bash benchmarks/gpu_check.sh [DATA_PATH]        # DATA_PATH holds tiktok/ (default ../shared/data)
# 1. every model of ours and RecBole's BPR and LightGCN train 1 epoch of ml-100k on the GPU (result JSON: device);
# 2. a TikTok epoch of LightGCN, LATTICE, PromptMM's teacher and its stage 2 on the GPU next to the CPU
#    (benchmarks/epoch_cost.py, median of 3 epochs, one CPU thread);
# 3. recommend and export on the student checkpoint trained on the GPU; the artefact serves on the CPU.
# Everything goes to $OUT (default gpu_check/). GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (a dry run of
# the script itself); GPU_CHECK_MODELS="A B" narrows step 1.
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${OUT:-gpu_check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ]; then
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
fi
GPU=$([ "$DEVICE" = cuda ] && echo True || echo False)

echo "== 1. every model, 1 epoch of ml-100k on $DEVICE"
MODELS=${GPU_CHECK_MODELS:-"$($PY -c 'from recbole_promptmm.registry import our_models; print(*our_models())') BPR LightGCN"}
for m in $MODELS; do
  $PY run_recbole.py --model="$m" --dataset=ml-100k --epochs=1 --use_gpu=$GPU --checkpoint_dir="$OUT/saved" \
    --result_json="$OUT/$m.json" > "$OUT/$m.txt" 2>&1 || { echo "$m: FAILED (see $OUT/$m.txt)"; exit 1; }
  $PY -c "import json, sys; r = json.load(open(sys.argv[1])); d = r['config']['device']
assert d.startswith('$DEVICE'), f'trained on {d}'; print(f\"{r['model']:16s} {d:8s} test recall@20 {r['test_result']['recall@20']:.4f}\")" "$OUT/$m.json"
done

echo "== 2. TikTok epoch seconds, $DEVICE vs cpu"
for dev in "$GPU" False; do
  $PY benchmarks/epoch_cost.py --dataset=tiktok --data_path="$DATA" --models=LightGCN,LATTICE,PromptMMTeacher \
    --use_gpu=$dev | tee "$OUT/epoch_cost_use_gpu_$dev.txt"
done

echo "== 3. recommend and export of the student trained on $DEVICE"
STUDENT=$($PY -c "import json; print(json.load(open('$OUT/PromptMM.json'))['student_checkpoint'])")
$PY -m recbole_promptmm recommend --checkpoint="$STUDENT" --users=196,186 --k=10 --out="$OUT/top10.csv"
$PY -m recbole_promptmm export --checkpoint="$STUDENT" --out="$OUT/artefact"
CUDA_VISIBLE_DEVICES= $PY -c "from recbole_promptmm.serving.artefact import Recommender
print(Recommender.load('$OUT/artefact').recommend(['196'], k=5))"
echo "gpu_check: all passed on $DEVICE"
