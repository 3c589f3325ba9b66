#!/usr/bin/env bash
# Re-run every command whose output the docs pages show, and keep the outputs for pasting.
#   tools/docs_examples.sh [OUTDIR]     (default: build/docs-examples; needs the export extra)
# The pages quote these outputs with the date and machine they were measured on; after a
# change to the CLI, the demo bundle or the exporters, re-run this and update the pages.
# The stand-in models of the export walk-through are random `tiny` SELECTION networks and the
# test fixture nnU-Net folder: the walk-through shows the steps, not a useful model.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/build/docs-examples}" && cd "${1:-$ROOT/build/docs-examples}" && pwd)"
cd "$OUT"
run() {  # run NAME CMD...: stdout+stderr to NAME.txt, exit code appended
  local name=$1; shift
  echo "== $name: $*"
  set +e; "$@" >"$name.txt" 2>&1; local rc=$?; set -e
  echo "[exit code $rc]" >>"$name.txt"
}
{ date -u; uname -m; nproc; python -c 'import hccatom; print("hccatom", hccatom.__version__)'; } > machine.txt
DEMO="$(python -c 'from hccatom.demo import demo_bundle_path; print(demo_bundle_path())')"

# quick start
run demo /usr/bin/time -v hccatom demo --json recommendation.json
run demo_bundle_info hccatom bundle info "$DEMO"
run demo_bundle_verify hccatom bundle verify "$DEMO"

# outputs explained: the seed-3 synthetic patient as files, then recommend
python - <<'PY'
from hccatom.ct_io import write_volume
from hccatom.demo import demo_case

ct, clinical, _ = demo_case(3)
write_volume(ct["arterial"], "arterial.nii.gz")
write_volume(ct["portal"], "portal.nii.gz")
with open("clinical.json", "w", encoding="utf-8") as f:
    f.write(clinical.model_dump_json(indent=2))
PY
run recommend hccatom recommend --bundle "$DEMO" --arterial arterial.nii.gz \
  --portal portal.nii.gz --clinical clinical.json --json rec.json

# inputs: a clinical file with unit mix-ups and a missing field
python - "$ROOT/examples/clinical_example.json" <<'PY'
import json, sys
values = json.load(open(sys.argv[1], encoding="utf-8"))
values.update(albumin_g_per_l=3.85, total_bilirubin_umol_per_l=1.0, max_tumour_diameter_mm=6.4)
del values["ecog"]
json.dump(values, open("bad_clinical.json", "w", encoding="utf-8"), indent=2)
PY
run bad_clinical hccatom recommend --bundle "$DEMO" --arterial arterial.nii.gz \
  --portal portal.nii.gz --clinical bad_clinical.json

# export walk-through
python - <<'PY'
import torch
from hccatom.export.selection_model import SelectionModel, get_size

for i, cohort in enumerate(("TACE", "HAIC", "TC", "HC")):
    torch.manual_seed(i)
    torch.save(SelectionModel(get_size("tiny")).state_dict(), f"selection_{cohort.lower()}.pth")
PY
rm -rf nnunet_model export site-hcc-1.0.0.zip
cp -r "$ROOT/tests/fixtures/nnunet/model" nnunet_model
for cohort in TACE HAIC TC HC; do
  lc=$(echo "$cohort" | tr 'A-Z' 'a-z')
  run "export_selection_$lc" /usr/bin/time -f "%e s wall" hccatom export selection \
    --checkpoint "selection_$lc.pth" --cohort "$cohort" --size tiny --out "export/selection_$lc"
done
run export_nnunet /usr/bin/time -f "%e s wall" hccatom export nnunet \
  --model-folder nnunet_model/nnUNetTrainer__nnUNetPlans__3d_fullres --out export/segmentation
run bundle_build /usr/bin/time -f "%e s wall" hccatom bundle build \
  --segmentation export/segmentation \
  --selection TACE=export/selection_tace HAIC=export/selection_haic \
              TC=export/selection_tc HC=export/selection_hc \
  --thresholds TACE=0.41,HAIC=0.35,TC=0.62,HC=0.64 \
  --name site-hcc --version 1.0.0 --out site-hcc-1.0.0.zip
run bundle_verify hccatom bundle verify site-hcc-1.0.0.zip
run bundle_info hccatom bundle info site-hcc-1.0.0.zip
echo "outputs in $OUT"
