#!/usr/bin/env bash
# Mutation testing of the core. Runs on 2 CPU cores at low priority.
#
#   dev/mutation.sh mutmut        # estimators.py and layers/club.py (plain functions), mutmut 3
#   dev/mutation.sh cosmic-ray M  # a Keras module on disk, M in: infobal trainer_tf
#                                 #   trainer_base critics view_aggregator view_encoder club
#                                 #   pair_critics
#                                 #   (configs and the scope filter in dev/cosmic-ray/)
#   dev/mutation.sh all           # everything: mutmut, then two cosmic-ray queues at once
#   SAMPLE=20 SEED=0 dev/mutation.sh cosmic-ray infobal   # a random sample of the scope
#
# Results: `mutmut results` / `dev/cosmic-ray/M.report.txt` (every job) and
# `M.survivors.txt` (the tally and each survivor); after adding tests,
# `python dev/cosmic-ray/recheck.py dev/cosmic-ray/M.toml dev/cosmic-ray/M.sqlite --out
# dev/cosmic-ray/M.recheck.txt` re-tests the survivors. Summary in dev/MUTATION.md.
# Needs: pip install mutmut==3.8.1 cosmic-ray==8.7.0 (test-only tools, not package deps).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
# mutmut puts its mutated copy (mutants/) first on sys.path; an outside PYTHONPATH would
# shadow it, so it is cleared here.
unset PYTHONPATH
NICE="nice -n 19"
JOBS="${JOBS:-2}"

run_mutmut() {
    rm -rf mutants  # a fresh run: mutmut may reuse cached verdicts after tests change
    $NICE python -m mutmut run --max-children "$JOBS"
    python -m mutmut results --all true > dev/mutmut-results.txt || true
}

run_cosmic_ray() {
    # cosmic-ray edits the module on disk: it works in a scratch copy of the tree, so the
    # worktree is never left mutated and sessions of different modules can run at once.
    local module="$1" here="$PWD"
    local scratch="${SCRATCH:-${TMPDIR:-$(dirname "$(mktemp -u)")}/keras-infobal-mutation}/$module"
    rm -rf "$scratch" && mkdir -p "$scratch"
    cp -r keras_infobal tests setup.cfg pyproject.toml dev "$scratch"/
    (
        cd "$scratch"
        export PYTHONPATH="$scratch"  # the scratch copy, not the editable install
        cfg="dev/cosmic-ray/$module.toml" db="$module.sqlite"
        # The fork server's own alarm ends a hanging mutant's test (an infinite loop) a little
        # before cosmic-ray's timeout does, so the server is free for the next mutant.
        local timeout
        timeout=$(python -c "import sys, tomllib; print(int(tomllib.load(open(sys.argv[1], 'rb'))['cosmic-ray']['timeout']))" "$cfg")
        export FORKSERVER_TIMEOUT_S="${FORKSERVER_TIMEOUT_S:-$((timeout - 20))}"
        $NICE cosmic-ray init "$cfg" "$db"
        $NICE cr-filter-operators "$db" "$cfg"
        # the named functions only; SAMPLE=N keeps N of them, random with seed SEED (default 0)
        MUTATION_SAMPLE="${SAMPLE:-}" MUTATION_SEED="${SEED:-0}" \
            $NICE python dev/cosmic-ray/scope_filter.py "$cfg" "$db"
        # Tests run in children forked from a server that imported TensorFlow once.
        find . -name __pycache__ -prune -exec rm -rf {} +
        export FORKSERVER_SOCKET="$scratch/forkserver.sock"
        $NICE python dev/cosmic-ray/forkserver.py "$FORKSERVER_SOCKET" &
        server=$!
        trap 'kill $server 2>/dev/null' EXIT
        while [ ! -S "$FORKSERVER_SOCKET" ]; do sleep 1; done
        local t0=$SECONDS
        $NICE cosmic-ray --verbosity=WARNING baseline "$cfg"
        echo "baseline test run: $((SECONDS - t0)) s"
        $NICE cosmic-ray exec "$cfg" "$db"
        kill $server
        cr-report --show-pending "$db" > "$here/dev/cosmic-ray/$module.report.txt" || true
        cp "$db" "$here/dev/cosmic-ray/$module.sqlite"
        python dev/cosmic-ray/survivors.py "$db" > "$here/dev/cosmic-ray/$module.survivors.txt"
    )
    tail -n 4 "dev/cosmic-ray/$module.report.txt"
}

case "${1:-all}" in
    mutmut) run_mutmut ;;
    cosmic-ray) run_cosmic_ray "$2" ;;
    all)
        # mutmut, then the cosmic-ray sessions in two queues at once, one per core (each
        # session's tests are single-threaded enough); balanced by the session times measured
        # on 2 cores (dev/MUTATION.md): about 55 + 52 minutes, so about an hour in all.
        run_mutmut
        ( for m in pair_critics infobal trainer_tf trainer_base club; do run_cosmic_ray "$m"; done ) &
        ( for m in view_encoder view_aggregator critics; do run_cosmic_ray "$m"; done ) &
        wait ;;
    *) echo "usage: $0 [mutmut | cosmic-ray MODULE | all]" >&2; exit 2 ;;
esac
