#!/usr/bin/env bash
# A shell-only agent answering requests, with nothing but the `blackboard` CLI (spec/AGENTS.md 5).
#
#   agents/squarer          its registration, capability "square"               (blackboard join)
#   inbox/squarer/<id>      a request whose body is an integer N                (blackboard request)
#   inbox/client/<id>       the reply {"n": N, "square": N*N}                   (blackboard reply)
#
# The agent is a loop: `inbox --wait S --json` prints one JSON message per line (the envelope's
# fields first: id, from, to, recipient, kind, body, ...) and `reply ID BODY` answers one and acks it
# in the same record. It stops after N requests, or after 10 idle seconds (inbox --wait exits 7),
# so a failure cannot hang it. The client is this script, one `blackboard request` per number. Run:
#   bash examples/shell_responder.sh [--board DIR] [--keep]
set -euo pipefail

NUMBERS=(3 -4 12 0 99)
N=${#NUMBERS[@]}

# The CLI, as a command line split on spaces: $BLACKBOARD_CLI if set (e.g. "python3 -m blackboard"),
# else `blackboard` on PATH, else the module.
if [[ -z "${BLACKBOARD_CLI:-}" ]]; then
    if command -v blackboard >/dev/null 2>&1; then
        BLACKBOARD_CLI=blackboard
    else
        BLACKBOARD_CLI="python3 -m blackboard"
    fi
fi
read -r -a bb <<<"$BLACKBOARD_CLI"

# The board: --board DIR, else a fresh temp dir, removed at exit unless --keep. Every command below
# finds it in BLACKBOARD_DIR.
BLACKBOARD_DIR="" keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --board) BLACKBOARD_DIR=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: bash examples/shell_responder.sh [--board DIR] [--keep]" >&2; exit 2 ;;
    esac
done
temp=""
if [[ -z $BLACKBOARD_DIR ]]; then
    BLACKBOARD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/shell-responder-XXXXXX")
    [[ $keep == 1 ]] || temp=$BLACKBOARD_DIR
fi
export BLACKBOARD_DIR
"${bb[@]}" init >/dev/null
echo "board: $BLACKBOARD_DIR${temp:+ (a temp dir, removed at exit; --keep keeps it)}"

# The responder agent. It joins before the loop starts (a request to a name never registered is
# refused), with --pid $$: the registry shows it offline as soon as this script is gone.
responder() {
    local answered=0 lines line id kind n
    while ((answered < N)); do
        # One JSON object per message. Ours are compact with the envelope's fields in a fixed order,
        # and a request's body is an integer here, so sed can take them apart without jq. Exit 7: idle.
        lines=$("${bb[@]}" inbox --wait 10 --json) || { echo "responder: idle for 10 s, stopping" >&2; break; }
        while IFS= read -r line; do
            id=$(sed -E 's/^\{"id":"(m-[0-9a-f]{12})".*/\1/' <<<"$line")
            kind=$(sed -E 's/.*,"kind":"([a-z-]+)",.*/\1/' <<<"$line")
            if [[ $kind != request ]] || ! n=$(sed -En 's/.*,"body":(-?[0-9]+),.*/\1/p' <<<"$line") || [[ -z $n ]]; then
                "${bb[@]}" ack "$id" >/dev/null # not something we answer: handled, so not listed again
                continue
            fi
            # The reply and the ack of the request: one record (a request is never answered twice).
            "${bb[@]}" reply "$id" "{\"n\": $n, \"square\": $((n * n))}" >/dev/null
            answered=$((answered + 1))
        done <<<"$lines"
    done
    echo "responder: answered $answered requests"
    "${bb[@]}" leave >/dev/null
    ((answered == N))
}

BLACKBOARD_AGENT=squarer "${bb[@]}" join --capability square --description "squares integers" --pid $$ >/dev/null
BLACKBOARD_AGENT=squarer responder &
agent=$!
trap 'kill "$agent" 2>/dev/null || true; [[ -z $temp ]] || rm -rf "$temp"' EXIT # no agent or temp board left behind

# The client: one request per number, each waiting for its reply (exit 7 after 10 s without one).
ok=0
for n in "${NUMBERS[@]}"; do
    reply=$(BLACKBOARD_AGENT=client "${bb[@]}" request --timeout 10 -- squarer "$n") # --: BODY may be -4
    if grep -q "\"body\":{\"n\":$n,\"square\":$((n * n))}" <<<"$reply"; then
        ok=$((ok + 1))
        echo "client: $n -> $((n * n)) ok"
    else
        echo "client: $n -> WRONG: $reply" >&2
    fi
done
wait "$agent" # fails (set -e) unless the responder answered all N
trap '[[ -z $temp ]] || rm -rf "$temp"' EXIT

left=$("${bb[@]}" inbox --as client --json)
if [[ $ok -ne $N || -n $left ]]; then
    echo "FAILED: $ok of $N replies right; left in the client's inbox: ${left:-nothing}" >&2
    exit 1
fi
echo "$ok/$N requests answered by the shell responder"
