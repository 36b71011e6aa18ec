#!/usr/bin/env bash
# The S-Enformer report's whole study on the real data, on a GPU machine:
#   the published Enformer evaluated, S-Enformer fine-tuned from it (attention layers only,
#   Adam 1e-4, batch 5, 25,000 steps: about 3 days on one 24 GB GPU in the report), both
#   evaluated and compared, memory and time profiled up to 1 Mb, and the receptive field measured.
#
#   PROJECT=my-gcp-project examples/reproduce_report_gpu.sh [WORK_DIR]
#
# Needs gsutil (Google Cloud SDK) and a Google Cloud project to bill: the Basenji bucket is
# requester pays. Disk: ~150 GB for human/ and mouse/ (all of gs://basenji_barnyard/data is
# ~320 GB), ~1 GB of weights, ~6 GB of genomes. Every step can be run again: finished outputs
# are kept (evaluate/compare refuse to overwrite without --overwrite; train continues with
# --resume).
set -euo pipefail

PROJECT=${PROJECT:?set PROJECT to the Google Cloud project billed for the requester-pays data}
WORK=${1:-study}
DATA=$WORK/data
mkdir -p "$DATA"

# 0. The tool with TensorFlow's CUDA wheels (run from the repository root).
python3 -m venv .venv
.venv/bin/pip install -q '.[gpu]'
export PATH="$PWD/.venv/bin:$PATH"
python -c 'import tensorflow as tf; print("GPUs:", tf.config.list_physical_devices("GPU"))'

# 1. The data: Basenji/Enformer TFRecords (human is enough to evaluate; training alternates
#    human and mouse batches), and the genomes the records were cut from, whose flanks extend
#    the 131,072-bp records to the model's 196,608 bp.
for organism in human mouse; do
  [ -f "$DATA/$organism/statistics.json" ] ||
    gsutil -u "$PROJECT" -m cp -r "gs://basenji_barnyard/data/$organism" "$DATA/"
done
for genome in hg38 mm10; do
  [ -f "$DATA/$genome.ml.fa" ] ||
    curl -sSL "https://storage.googleapis.com/basenji_barnyard2/$genome.ml.fa.gz" |
      gunzip > "$DATA/$genome.ml.fa"
done
senformer data inspect "$DATA/human"          # 34,021 / 2,213 / 1,937 records, 5,313 tracks
senformer data inspect "$DATA/mouse"

# 2. The published Enformer weights (the default place `--model enformer-pretrained` looks).
WEIGHTS=${SENFORMER_CACHE:-$HOME/.cache/senformer}/enformer-pretrained
mkdir -p "$WEIGHTS"
[ -f "$WEIGHTS/checkpoint" ] ||
  gsutil -m cp 'gs://dm-enformer/models/enformer/sonnet_weights/*' "$WEIGHTS/"

# 3. Evaluate the published Enformer on the human test split (1,937 records; the independent
#    re-evaluation measured mean r 0.650 with these inputs).
[ -f "$WORK/evaluate/enformer/summary.json" ] ||
  senformer evaluate --model enformer-pretrained --data "$DATA/human" \
    --genome "$DATA/hg38.ml.fa" --batch-size 4 --out "$WORK/evaluate/enformer"

# 4. Fine-tune S-Enformer with the report's recipe (examples/s-enformer-finetune.json holds the
#    same settings as a run configuration): the published weights with sparse attention, only
#    the attention layers trained, Adam 1e-4 without warm-up, batch 5, 25,000 steps. The report
#    clipped each gradient to norm 1 and padded records with N; here the global norm is clipped
#    to 1 and the flanks come from the genomes (drop the --genome options to pad with N).
RUN=$WORK/runs/s-enformer
if [ -f "$RUN/config.json" ]; then resume=(--resume); else resume=(); fi
senformer train --init-from enformer-pretrained --set attention=sparse --trainable attention \
  --learning-rate 1e-4 --warmup-steps 0 --clip-norm 1.0 --batch-size 5 --steps 25000 \
  --data "$DATA/human" --data "$DATA/mouse" \
  --genome "human=$DATA/hg38.ml.fa" --genome "mouse=$DATA/mm10.ml.fa" \
  --eval-every 1000 --eval-sequences 256 --checkpoint-every 1000 \
  --out "$RUN" "${resume[@]}"

# 5. Evaluate S-Enformer the same way, and compare (A = Enformer, B = S-Enformer: the report's
#    model-vs-model correlation and % of sequences where S-Enformer is at least as good).
[ -f "$WORK/evaluate/s-enformer/summary.json" ] ||
  senformer evaluate --model "$RUN" --data "$DATA/human" --genome "$DATA/hg38.ml.fa" \
    --batch-size 4 --out "$WORK/evaluate/s-enformer"
senformer compare --results "$WORK/evaluate/enformer" "$WORK/evaluate/s-enformer" \
  --out "$WORK/compare" --overwrite

# 6. Memory and time of full vs sparse attention from 131,072 bp to 1,048,576 bp (on a GPU the
#    default is the published width at the report's lengths; rows that do not fit say so).
senformer profile --out "$WORK/profile" --overwrite

# 7. The receptive field: one base changed at 9 positions, 100 random sequences each.
senformer receptive-field --model enformer-pretrained --model "$RUN" --positions 9 \
  --repeats 100 --out "$WORK/receptive-field" --overwrite

echo "done: $WORK/{evaluate,compare,profile,receptive-field}/"
