#!/usr/bin/env bash
# A first session with senformer on the built-in synthetic data (about a minute on 2 CPU cores).
# Run from the repository root after `make install` (or `make test`).
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-/tmp/senformer-quickstart}

# The models: parameters per part and the sparse attention pattern.
senformer model summary --preset tiny
senformer model summary --preset s-enformer --json > "$out.summary.json"

# Synthetic data in the real Basenji format (records, statistics.json, sequences.bed, targets
# sheets and the genome FASTA they were cut from), then the check users run after a download.
senformer data synth "$out" --preset tiny --seed 0
senformer data inspect "$out/human"
