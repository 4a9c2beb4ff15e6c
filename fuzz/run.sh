#!/usr/bin/env bash
# Runs every fuzz target (or those named) one after another for SECONDS each
# (default 300), single process, starting from the committed seeds; the
# corpus each run grows is kept in fuzz/corpus/<target>/ (not committed).
# A crash stops that target's run and leaves its input in
# fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/, where the
# stable `cargo test` replays it. Needs nightly and `cargo install cargo-fuzz`.
#
#   fuzz/run.sh            # every target, 300 s each
#   SECONDS_PER_TARGET=60 fuzz/run.sh materials ca_dir
set -uo pipefail
cd "$(dirname "$0")"
seconds=${SECONDS_PER_TARGET:-300}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(materials materials_der ca_dir status_request proxy_args example_args first_bytes)
max_len() {
    case $1 in
        materials | materials_der | ca_dir | first_bytes) echo 8192 ;;
        status_request) echo 10240 ;; # past the page's 8 KiB head limit
        *) echo 512 ;;
    esac
}
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -max_len="$(max_len "$target")" \
        -print_final_stats=1 2>&1 | tee "fuzz-$target.log" | grep -E "^(stat::|Done|==[0-9]+== ERROR|SUMMARY)|panicked"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
exit $status
