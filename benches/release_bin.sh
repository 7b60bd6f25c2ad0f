# Sourced by the bench scripts (medians.sh, fees_cost.sh): sets
# BURNLEDGER_BIN to the release binary, building it first (in
# $CARGO_TARGET_DIR if set), unless BURNLEDGER_BIN already names one.
if [[ -z "${BURNLEDGER_BIN:-}" ]]; then
    (cd "$here/.." && cargo build --release --quiet)
    BURNLEDGER_BIN="${CARGO_TARGET_DIR:-$here/../target}/release/burnledger"
fi
