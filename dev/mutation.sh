#!/usr/bin/env bash
# Mutation testing of the core (issue 14). Runs on 2 CPU cores at low priority.
#
#   dev/mutation.sh mutmut        # estimators.py and layers/club.py (plain functions), mutmut 3
#   dev/mutation.sh cosmic-ray M  # a Keras module on disk, M in: critics view_encoder
#                                 #   view_aggregator infobal (configs in dev/cosmic-ray/)
#   dev/mutation.sh all           # everything, in that order
#
# Results: `mutmut results` / `cr-report dev/cosmic-ray/M.sqlite`; summary in dev/MUTATION.md.
# Needs: pip install mutmut==3.8.1 cosmic-ray==8.4.6 (test-only tools, not package deps).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
# mutmut puts its mutated copy (mutants/) first on sys.path; an outside PYTHONPATH would
# shadow it, so it is cleared here.
unset PYTHONPATH
NICE="nice -n 15"
JOBS="${JOBS:-2}"

run_mutmut() {
    $NICE python -m mutmut run --max-children "$JOBS"
    python -m mutmut results --all true > dev/mutmut-results.txt || true
}

run_cosmic_ray() {
    local module="$1" cfg="dev/cosmic-ray/$1.toml" db="dev/cosmic-ray/$1.sqlite"
    # cosmic-ray edits the file on disk: never leave a mutant behind.
    trap 'git checkout -- keras_infobal' EXIT
    rm -f "$db"
    cosmic-ray init "$cfg" "$db"
    cosmic-ray --verbosity=WARNING baseline "$cfg"
    $NICE cosmic-ray exec "$cfg" "$db"
    cr-report --show-pending "$db" > "dev/cosmic-ray/$module.report.txt" || true
    tail -n 3 "dev/cosmic-ray/$module.report.txt"
    git checkout -- keras_infobal
    trap - EXIT
}

case "${1:-all}" in
    mutmut) run_mutmut ;;
    cosmic-ray) run_cosmic_ray "$2" ;;
    all)
        run_mutmut
        for m in critics view_encoder view_aggregator infobal; do run_cosmic_ray "$m"; done ;;
    *) echo "usage: $0 [mutmut | cosmic-ray MODULE | all]" >&2; exit 2 ;;
esac
