#!/usr/bin/env bash
# CD's model step (`make release-model`): train the tagged commit's model on the data version
# it records, register it as the challenger with the release (and image) as tags, then run
# the promotion gate. `fraudops promote` alone decides whether the champion alias moves:
# this script never moves an alias itself, and a rejection is a decision, not a failure.
#
# Environment: RELEASE (the tag, required), IMAGE (the pushed image, optional),
# DVC_REMOTE_URL (where the default remote is, when the committed path is not reachable),
# and the FRAUDOPS_* settings of the registry (FRAUDOPS_MLFLOW_TRACKING_URI, ...).
set -euo pipefail

: "${RELEASE:?set RELEASE to the release tag, e.g. RELEASE=v1.2.0}"

if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
    dvc remote modify --local "$(dvc remote default)" url "$DVC_REMOTE_URL"
fi
dvc pull --quiet data.dvc

tags=(--tag "fraudops.release=$RELEASE")
if [[ -n "${IMAGE:-}" ]]; then
    tags+=(--tag "fraudops.image=$IMAGE")
fi
fraudops train "${tags[@]}"
fraudops promote 2>&1 | tee -a "${GITHUB_STEP_SUMMARY:-/dev/null}"
