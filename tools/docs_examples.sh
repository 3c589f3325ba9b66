#!/usr/bin/env bash
# Re-run every command whose output the docs pages show, and keep the outputs for pasting.
#   tools/docs_examples.sh [--quick] [OUTDIR]   (default: build/docs-examples; export extra)
# --quick (what CI runs, about a minute): every example, but the steps marked SLOW are
# replaced: the demo runs once instead of five timed times, and the export walk-through
# builds its bundle from the committed test exports (tests/fixtures) instead of exporting
# four SELECTION checkpoints and the nnU-Net model (about 4 minutes). seconds.txt has the
# time of every command. The pages' Python examples are run from the pages themselves
# (blocks marked `<!-- example: NAME -->`, see tools/docs_block.py).
# The pages quote these outputs with the date and machine they were measured on; after a
# change to the CLI, the demo bundle or the exporters, re-run this and update the pages.
# The stand-in models of the export walk-through are random `tiny` SELECTION networks and the
# test fixture nnU-Net folder: the walk-through shows the steps, not a useful model.
set -euo pipefail
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/build/docs-examples}" && cd "${1:-$ROOT/build/docs-examples}" && pwd)"
cd "$OUT"
: > seconds.txt
FAILED=()
run() {  # run NAME CMD...: stdout+stderr to NAME.txt, exit code appended; expects exit code 0
  expect_code 0 "$@"
}
expect_code() {  # expect_code CODE NAME CMD...: as run, for a command that must exit with CODE
  local want=$1 name=$2; shift 2
  echo "== $name: $*"
  local t0=$EPOCHREALTIME
  set +e; "$@" >"$name.txt" 2>&1; local rc=$?; set -e
  echo "[exit code $rc]" >>"$name.txt"
  awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s %.1f\n", n, b - a }' >>seconds.txt
  if [ "$rc" != "$want" ]; then
    echo "   !! $name exited with $rc, expected $want (see $OUT/$name.txt)"
    FAILED+=("$name")
  fi
}
{ date -u; uname -m; nproc; python -c 'import hccatom; print("hccatom", hccatom.__version__)'; } > machine.txt
DEMO="$(python -c 'from hccatom.demo import demo_bundle_path; print(demo_bundle_path())')"

# quick start: the demo from a cold process, five times (the pages quote the median); the
# load average before each run goes to demo_load.txt (the machine may be shared)
# SLOW: --quick runs it once
DEMO_RUNS=5; [ "$QUICK" = 1 ] && DEMO_RUNS=1
: > demo_load.txt
for i in $(seq 1 "$DEMO_RUNS"); do
  echo "run $i: $(cut -d' ' -f1-3 /proc/loadavg)" >> demo_load.txt
  run "demo_$i" /usr/bin/time -v hccatom demo --json recommendation.json
done
cp demo_1.txt demo.txt
python - "$DEMO_RUNS" <<'PY'
import re, statistics, sys
walls, cpus, rss = [], [], []
for i in range(1, int(sys.argv[1]) + 1):
    text = open(f"demo_{i}.txt", encoding="utf-8").read()
    m, s = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\d+):([\d.]+)", text).groups()
    walls.append(int(m) * 60 + float(s))
    cpus.append(float(re.search(r"User time \(seconds\): ([\d.]+)", text).group(1))
                + float(re.search(r"System time \(seconds\): ([\d.]+)", text).group(1)))
    rss.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024)
with open("demo_timing.txt", "w", encoding="utf-8") as f:
    f.write(f"wall s: {walls}\ncpu s: {cpus}\nmax rss MiB: {[round(r) for r in rss]}\n")
    f.write(f"median wall {statistics.median(walls):.1f} s, median cpu {statistics.median(cpus):.1f} s, "
            f"median rss {statistics.median(rss):.0f} MiB\n")
PY
run demo_bundle_info hccatom bundle info "$DEMO"
run demo_bundle_verify hccatom bundle verify "$DEMO"

example() {  # example NAME PAGE: run the page's Python block marked NAME (as run NAME)
  local code
  code="$(python "$ROOT/tools/docs_block.py" "$ROOT/docs/$2" "$1")" || { FAILED+=("$1"); return; }
  run "$1" python -c "$code"
}

# outputs explained: the seed-3 synthetic patient as files (quickstart's Python), then
# recommend from the command line and from Python (quickstart says: HAIC)
example write-demo-case quickstart.md
run recommend hccatom recommend --bundle "$DEMO" --arterial arterial.nii.gz \
  --portal portal.nii.gz --clinical clinical.json --json rec.json
example recommend-from-python quickstart.md
if [ "$(head -n 1 recommend-from-python.txt)" != "HAIC" ]; then
  echo "   !! recommend-from-python printed $(head -n 1 recommend-from-python.txt), the page says HAIC"
  FAILED+=("recommend-from-python (plan)")
fi

# inputs: a clinical file with unit mix-ups and a missing field
python - "$ROOT/examples/clinical_example.json" <<'PY'
import json, sys
values = json.load(open(sys.argv[1], encoding="utf-8"))
values.update(albumin_g_per_l=3.85, total_bilirubin_umol_per_l=1.0, max_tumour_diameter_mm=6.4)
del values["ecog"]
json.dump(values, open("bad_clinical.json", "w", encoding="utf-8"), indent=2)
PY
expect_code 2 bad_clinical hccatom recommend --bundle "$DEMO" --arterial arterial.nii.gz \
  --portal portal.nii.gz --clinical bad_clinical.json

# export walk-through (SLOW: the random checkpoints and their export; not with --quick)
[ "$QUICK" = 1 ] || python - <<'PY'
import torch
from hccatom.export.selection_model import SelectionModel, get_size

for i, cohort in enumerate(("TACE", "HAIC", "TC", "HC")):
    torch.manual_seed(i)
    torch.save(SelectionModel(get_size("tiny")).state_dict(), f"selection_{cohort.lower()}.pth")
PY
rm -rf nnunet_model export site-hcc-1.0.0.zip keys
mkdir -m 700 keys  # keygen creates no folder (a missing one is refused, as for every output)
run keygen hccatom bundle keygen --private keys/site-private.pem --public keys/site-public.pem
cp -r "$ROOT/tests/fixtures/nnunet/model" nnunet_model
if [ "$QUICK" = 1 ]; then
  # SLOW steps replaced: the committed test exports (the same nnU-Net fixture model, exported;
  # hand-built SELECTION graphs with the export contract) stand in for the four exports
  for cohort in TACE HAIC TC HC; do
    lc=$(echo "$cohort" | tr 'A-Z' 'a-z')
    mkdir -p "export/selection_$lc"
    cp "$ROOT/tests/fixtures/bundle/selection/$cohort/model.onnx" "export/selection_$lc/selection_$lc.onnx"
  done
  cp -r "$ROOT/tests/fixtures/nnunet/export" export/segmentation
  # what `export nnunet --no-window-before-segmentation --training-orientation LPS` records
  python - <<'PY'
from hccatom.segmentation.spec import SegmentationSpec

spec = SegmentationSpec.load("export/segmentation")
spec.model_copy(update={"window_before_segmentation": False,
                        "training_orientation": "LPS"}).save("export/segmentation")
PY
else
  for cohort in TACE HAIC TC HC; do
    lc=$(echo "$cohort" | tr 'A-Z' 'a-z')
    run "export_selection_$lc" /usr/bin/time -f "%e s wall" hccatom export selection \
      --checkpoint "selection_$lc.pth" --cohort "$cohort" --size tiny --out "export/selection_$lc"
  done
  run export_nnunet /usr/bin/time -f "%e s wall" hccatom export nnunet \
    --model-folder nnunet_model/nnUNetTrainer__nnUNetPlans__3d_fullres --out export/segmentation \
    --no-window-before-segmentation --training-orientation LPS
fi
run bundle_build /usr/bin/time -f "%e s wall" hccatom bundle build \
  --segmentation export/segmentation \
  --selection TACE=export/selection_tace HAIC=export/selection_haic \
              TC=export/selection_tc HC=export/selection_hc \
  --thresholds TACE=0.41,HAIC=0.35,TC=0.62,HC=0.64 \
  --name site-hcc --version 1.0.0 --sign-key keys/site-private.pem --out site-hcc-1.0.0.zip
run bundle_verify hccatom bundle verify site-hcc-1.0.0.zip
run bundle_verify_trusted hccatom bundle verify --trusted-key keys/site-public.pem site-hcc-1.0.0.zip
cp keys/site-public.pem site-public.pem  # bundle.md's Python example names the key bare
example load-signed-bundle bundle.md
run bundle_info hccatom bundle info site-hcc-1.0.0.zip
# a bundle signed by another key is refused (exit code 3); so is a pinned digest that differs
expect_code 3 bundle_verify_wrong_pin hccatom bundle verify --no-run \
  --expect-sha256 0000000000000000000000000000000000000000000000000000000000000000 site-hcc-1.0.0.zip
run keygen_other hccatom bundle keygen --private keys/other-private.pem --public keys/other-public.pem
expect_code 3 bundle_verify_wrong_key hccatom bundle verify --no-run --trusted-key keys/other-public.pem site-hcc-1.0.0.zip
# an unsigned directory bundle, signed afterwards with `bundle sign`
rm -rf site-hcc-unsigned
run bundle_build_unsigned hccatom bundle build --segmentation export/segmentation \
  --selection TACE=export/selection_tace HAIC=export/selection_haic \
              TC=export/selection_tc HC=export/selection_hc \
  --thresholds TACE=0.41,HAIC=0.35,TC=0.62,HC=0.64 --no-verify \
  --name site-hcc --version 1.0.0 --out site-hcc-unsigned
run bundle_verify_unsigned hccatom bundle verify --no-run site-hcc-unsigned
expect_code 3 bundle_verify_unsigned_trusted hccatom bundle verify --no-run \
  --trusted-key keys/site-public.pem site-hcc-unsigned
run bundle_sign hccatom bundle sign --key keys/site-private.pem --label "site release key" site-hcc-unsigned
run bundle_verify_signed_later hccatom bundle verify --no-run --trusted-key keys/site-public.pem site-hcc-unsigned
# edit the decision in a signed bundle: the signature no longer matches (exit code 3)
rm -rf site-hcc-edited && cp -r site-hcc-unsigned site-hcc-edited
python - <<'PY'
import json
p = "site-hcc-edited/manifest.json"
m = json.load(open(p, encoding="utf-8"))
m["thresholds"]["TACE"] = 0.9
json.dump(m, open(p, "w", encoding="utf-8"), indent=2)
PY
expect_code 3 bundle_verify_edited hccatom bundle verify --no-run site-hcc-edited
# the window statement is required when exporting an nnU-Net model (exit code 2)
expect_code 2 export_nnunet_no_window hccatom export nnunet \
  --model-folder nnunet_model/nnUNetTrainer__nnUNetPlans__3d_fullres --out export/segmentation_x \
  --training-orientation LPS
# the demo bundle is signed by the public demo key
run demo_bundle_verify_norun hccatom bundle verify --no-run "$DEMO"
echo "outputs in $OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED (unexpected exit code): ${FAILED[*]}"
  exit 1
fi
echo "every command exited as expected"
