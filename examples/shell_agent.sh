#!/usr/bin/env bash
# A shell-only agent on a board, using nothing but the `blackboard` CLI.
#
#   questions/<id>  "a question"                              posted by this script
#   answers/<id>    {"seq": S, "words": N, "question": ...}   written by the agent (S: the question's seq)
#
# The agent is one command: `blackboard watch questions/ --exec CMD` runs CMD (with sh) for each new
# question, with the event's fields in BLACKBOARD_KEY, BLACKBOARD_VALUE (JSON), BLACKBOARD_SEQ, ...
# Run:
#   bash examples/shell_agent.sh [--board DIR] [--keep]
set -euo pipefail

QUESTIONS=("what is a blackboard" "who reads the log" "how does a shell agent hear about new questions")
N=${#QUESTIONS[@]}

# The CLI, as a command line split on spaces: $BLACKBOARD_CLI if set (e.g. "python3 -m blackboard"),
# else `blackboard` on PATH, else the module. Exported: the agent's handler runs it too.
if [[ -z "${BLACKBOARD_CLI:-}" ]]; then
    if command -v blackboard >/dev/null 2>&1; then
        BLACKBOARD_CLI=blackboard
    else
        BLACKBOARD_CLI="python3 -m blackboard"
    fi
fi
export BLACKBOARD_CLI
read -r -a bb <<<"$BLACKBOARD_CLI"

# The board: --board DIR, else a fresh temp dir, removed at exit unless --keep. Every command below
# finds it in BLACKBOARD_DIR.
BLACKBOARD_DIR="" keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --board) BLACKBOARD_DIR=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: bash examples/shell_agent.sh [--board DIR] [--keep]" >&2; exit 2 ;;
    esac
done
temp=""
if [[ -z $BLACKBOARD_DIR ]]; then
    BLACKBOARD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/shell-agent-XXXXXX")
    [[ $keep == 1 ]] || temp=$BLACKBOARD_DIR
fi
export BLACKBOARD_DIR
"${bb[@]}" init >/dev/null
echo "board: $BLACKBOARD_DIR${temp:+ (a temp dir, removed at exit; --keep keeps it)}"

# Where the log ends now. The agent replays every question after this seq: questions posted while it
# is still starting up (~0.2 s for a Python process) are not missed, as they would be with --since now.
start=$("${bb[@]}" seq)

# The handler, run by sh once per question. It passes BLACKBOARD_VALUE on as JSON and never evaluates
# it: what is on a board is data, not code. BLACKBOARD_AUTHOR (set for the agent below) names the writer;
# it proves nothing unless shell-agent holds a key (`blackboard keygen --as shell-agent`: spec/TRUST.md).
handler='
id=${BLACKBOARD_KEY#questions/}
words=$(printf "%s" "$BLACKBOARD_VALUE" | wc -w | tr -d " ")
$BLACKBOARD_CLI write "answers/$id" "{\"seq\": $BLACKBOARD_SEQ, \"words\": $words, \"question\": $BLACKBOARD_VALUE}" >/dev/null
'
# --count: stop after N questions; --timeout: or after 20 idle seconds, so a failure cannot hang us.
BLACKBOARD_AUTHOR=shell-agent "${bb[@]}" watch questions/ --since "${start:-0}" --count "$N" --timeout 20 \
    --exec "$handler" &
agent=$!
trap 'kill "$agent" 2>/dev/null || true; [[ -z $temp ]] || rm -rf "$temp"' EXIT # no agent or temp board left behind

for i in "${!QUESTIONS[@]}"; do
    "${bb[@]}" write --author user --text "questions/q$((i + 1))" "${QUESTIONS[$i]}" >/dev/null
done
echo "posted $N questions; waiting for the agent"
wait "$agent"

listing=$("${bb[@]}" ls answers/)
echo "$listing"
count=$(grep -c '^answers/' <<<"$listing" || true)
if [[ $count -ne $N ]]; then
    echo "FAILED: $count answers for $N questions" >&2
    exit 1
fi
echo "$count/$N questions answered by the shell agent"
