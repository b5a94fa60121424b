#!/usr/bin/env bash
# Mutation testing of the invariants: break the code on purpose and check that a test fails.
#
#   tools/mutate.sh                 every target below (about 20 minutes on 2 idle cores)
#   tools/mutate.sh binding policy  just those
#
# Slow, so not part of .ci/run: run it after changing a target or its tests. mutmut (the dev extra)
# makes the mutants under mutants/ (ignored by git, reused by the next run), forks one process per
# mutant and runs only the tests of [tool.mutmut] in pyproject.toml that reach the mutated function.
# Prints each surviving mutant (`.venv/bin/mutmut show NAME` shows its diff), a count per target,
# and exits 1 when any survived that is not a known equivalent (EQUIVALENT below).
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A TARGETS=(
    [planner]="reconcile.planning.planner.*"
    # The applier's batching: the chunking, the batch-size cap and the create/cancel batch loops.
    [batching]="reconcile.apply.run.x_chunks__* reconcile.apply.executor.x_execute__*
                reconcile.apply.create.x_run_creates__* reconcile.apply.create.x__create_batch__*
                reconcile.apply.cancel.x_run_cancels__*"
    # The journal: durable records (state) and the applier's typed intents over them.
    [journal]="reconcile.state.journal.* reconcile.apply.intents.*"
    [policy]="reconcile.planning.policy.*"
    [binding]="reconcile.apply.binding.*"
    # Secrets echoed by a server are redacted before any message, log or error can carry them.
    [masking]="reconcile.api.redact.* reconcile.api.client.xǁPartnerClientǁ_redacted__*"
)
# Survivors judged equivalent (no test can tell them from the original; docs/mutation.md says why
# for each). Mutant numbers move when the code does: re-judge after editing a target.
EQUIVALENT=(
    "reconcile.state.journal.xǁFileJournalǁ_append__mutmut_12"
    "reconcile.state.journal.xǁFileJournalǁunsettled__mutmut_2"
    "reconcile.state.journal.xǁFileJournalǁunsettled__mutmut_4"
    "reconcile.state.journal.xǁFileJournalǁunsettled__mutmut_23"
    "reconcile.api.client.xǁPartnerClientǁ_redacted__mutmut_11"
    "reconcile.api.client.xǁPartnerClientǁ_redacted__mutmut_14"
    "reconcile.api.redact.x_request_secrets__mutmut_10"
    "reconcile.api.redact.x_request_secrets__mutmut_11"
    "reconcile.api.redact.x_request_secrets__mutmut_12"
    "reconcile.api.redact.x_request_secrets__mutmut_25"
    "reconcile.planning.planner.x__action_key__mutmut_1"
    "reconcile.planning.planner.x__action_key__mutmut_2"
    "reconcile.planning.planner.x__action_key__mutmut_4"
    "reconcile.planning.planner.x__selected_plan__mutmut_23"
    "reconcile.planning.planner.x__plan_user__mutmut_73"
    "reconcile.planning.planner.x__note_unfinished_cancels__mutmut_11"
    "reconcile.planning.planner.x__planned_password__mutmut_3"
    "reconcile.planning.planner.x__plan_create__mutmut_1"
    "reconcile.planning.planner.x__plan_create__mutmut_2"
    "reconcile.planning.planner.x__plan_create__mutmut_48"
    "reconcile.planning.planner.x__plan_existing__mutmut_1"
    "reconcile.planning.planner.x__plan_existing__mutmut_2"
    "reconcile.planning.planner.x__plan_contact__mutmut_1"
    "reconcile.planning.planner.x__field_changes__mutmut_4"
    "reconcile.planning.planner.x__field_changes__mutmut_6"
    "reconcile.planning.planner.x__plain__mutmut_4"
)
ORDER=(planner batching journal policy binding masking)

if [ "$#" -eq 0 ]; then
    set -- "${ORDER[@]}"
fi
for target in "$@"; do
    if [ -z "${TARGETS[$target]+set}" ]; then
        echo "unknown target '$target': choose from ${ORDER[*]}" >&2
        exit 1
    fi
done

mutmut=.venv/bin/mutmut
if [ ! -x "$mutmut" ]; then
    echo "$mutmut not found: install the dev extra first (.venv/bin/pip install -e '.[dev]')" >&2
    exit 1
fi

mkdir -p mutants
survivors=0
summary=()
for target in "$@"; do
    read -r -a globs <<<"$(echo ${TARGETS[$target]})"
    echo "== $target: ${globs[*]}"
    "$mutmut" run "${globs[@]}" >"mutants/$target.log" 2>&1 || {
        tail -n 40 "mutants/$target.log" >&2
        echo "mutmut failed on $target (log: mutants/$target.log)" >&2
        exit 1
    }
    total=0
    equivalent=0
    survived=()
    while read -r name status; do
        for glob in "${globs[@]}"; do
            # shellcheck disable=SC2053  # glob match on purpose
            if [[ $name == $glob ]]; then
                total=$((total + 1))
                if [ "$status" = "survived" ] || [ "$status" = "no tests" ]; then
                    if printf '%s\n' "${EQUIVALENT[@]}" | grep -qxF "$name"; then
                        equivalent=$((equivalent + 1))
                    else
                        survived+=("$name ($status)")
                    fi
                fi
                break
            fi
        done
    done < <("$mutmut" results --all true 2>/dev/null | sed -E 's/^ *//; s/: / /')
    for line in "${survived[@]}"; do
        echo "   survived: $line"
    done
    summary+=("$target: ${#survived[@]} of $total mutants survived ($equivalent more are known equivalents)")
    survivors=$((survivors + ${#survived[@]}))
done
printf '%s\n' "${summary[@]}"
[ "$survivors" -eq 0 ]
