#!/usr/bin/env bash
# The client command the official MCP conformance suite runs for each client scenario: it
# appends the scenario server's URL, sets MCP_CONFORMANCE_SCENARIO (and MCP_CONFORMANCE_CONTEXT
# with credentials or the tool calls to make), and reads what the server saw. Every scenario is
# played by the `keel` binary ($KEEL_BIN) as a user would run it: `keel tools call` (one call
# through the contract layer, the contract drafted from the server's tool list) or
# `keel tools import-mcp` (connect and list). Each run gets a scratch store.
set -euo pipefail
url="${!#}"
keel="${KEEL_BIN:?KEEL_BIN must name the keel binary}"
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
ctx="${MCP_CONFORMANCE_CONTEXT:-}"
field() {
  python3 -c 'import json,sys; print(json.loads(sys.argv[1] or "{}").get(sys.argv[2]) or "")' "$ctx" "$1"
}
call() { "$keel" --data "$data" tools call "$url" "$@"; }

# Credentials the scenario hands out go in environment variables, as a contract names them.
export CONFORMANCE_CLIENT_ID CONFORMANCE_CLIENT_SECRET
CONFORMANCE_CLIENT_ID="$(field client_id)"
CONFORMANCE_CLIENT_SECRET="$(field client_secret)"
oauth=(--oauth authorization_code)
if [ -n "$CONFORMANCE_CLIENT_ID" ]; then
  oauth+=(--oauth-client-id-env CONFORMANCE_CLIENT_ID)
  [ -z "$CONFORMANCE_CLIENT_SECRET" ] || oauth+=(--oauth-client-secret-env CONFORMANCE_CLIENT_SECRET)
fi

# A contract without credentials for the scenario's tool, whose policy retries connection
# failures: a server that answers 401 must get exactly one attempt (class `auth`).
if [ "${KEEL_CONFORMANCE_NO_CREDENTIALS:-}" = 1 ]; then
  cat > "$data/test-tool.yaml" <<YAML
name: test-tool
description: the scenario's tool, called without credentials
schema: {input: {type: object}, output: {type: object}}
side_effect: read_only
consequence_tier: 0
idempotency: none
failure_policy: {retryable: [connection, timeout], max_attempts: 3, backoff: {initial: 10ms, max: 20ms}}
timeout: 10s
adapter: {kind: mcp, url: "$url"}
YAML
  "$keel" --data "$data" tools call "$data/test-tool.yaml"
  exit 0
fi

case "$MCP_CONFORMANCE_SCENARIO" in
  # Connect and list the tools (2026-07-28: per-request metadata; a network $ref not fetched).
  initialize | request-metadata | json-schema-ref-no-deref)
    "$keel" --data "$data" tools import-mcp --out "$data/drafts" "$url" ;;
  http-standard-headers) call test_headers ;;
  # A server listing malformed tool definitions beside a valid one: the valid one still works.
  http-invalid-tool-headers) call valid_tool --args '{"region": "eu-west-1"}' ;;
  # Multi round-trip requests (input_required results, requestState echoed).
  sep-2322-client-request-state)
    status=0
    for t in test_mrtr_echo_state test_mrtr_no_state test_mrtr_unrelated test_mrtr_no_result_type; do
      call "$t" || status=1
    done
    exit "$status" ;;
  tools_call) call add_numbers --args '{"a": 5, "b": 3}' ;;
  elicitation-sep1034-client-defaults) call test_client_elicitation_defaults --elicitation accept_defaults ;;
  sse-retry) call test_reconnection ;;
  # private_key_jwt: the client's key (a PEM) from an environment variable, as a contract names it.
  auth/client-credentials-jwt)
    export CONFORMANCE_PRIVATE_KEY
    CONFORMANCE_PRIVATE_KEY="$(field private_key_pem)"
    call test-tool --oauth client_credentials --oauth-client-id-env CONFORMANCE_CLIENT_ID \
      --oauth-private-key-env CONFORMANCE_PRIVATE_KEY ;;
  # Enterprise-managed authorization (SEP-990): the person's ID token from the enterprise IdP.
  auth/cross-app-access-complete-flow)
    export CONFORMANCE_IDP_CLIENT_ID CONFORMANCE_ID_TOKEN
    CONFORMANCE_IDP_CLIENT_ID="$(field idp_client_id)"
    CONFORMANCE_ID_TOKEN="$(field idp_id_token)"
    call test-tool --oauth enterprise_managed --oauth-client-id-env CONFORMANCE_CLIENT_ID \
      --oauth-client-secret-env CONFORMANCE_CLIENT_SECRET \
      --oauth-idp-issuer "$(field idp_issuer)" --oauth-idp-token-endpoint "$(field idp_token_endpoint)" \
      --oauth-idp-client-id-env CONFORMANCE_IDP_CLIENT_ID --oauth-id-token-env CONFORMANCE_ID_TOKEN ;;
  auth/client-credentials-*)
    call test-tool --oauth client_credentials --oauth-client-id-env CONFORMANCE_CLIENT_ID \
      --oauth-client-secret-env CONFORMANCE_CLIENT_SECRET ;;
  auth/basic-cimd)
    call test-tool "${oauth[@]}" --oauth-client-metadata-url https://conformance-test.local/client-metadata.json ;;
  auth/*) call test-tool "${oauth[@]}" ;;
  *)
    # Scenarios that say which calls to make (name and arguments) in their context.
    calls="$(python3 -c 'import json,sys
c = json.loads(sys.argv[1] or "{}")
for t in c.get("toolCalls") or []:
    print(t["name"] + "\t" + json.dumps(t.get("arguments") or {}))' "$ctx")"
    if [ -z "$calls" ]; then
      echo "client.sh: no way to play scenario $MCP_CONFORMANCE_SCENARIO" >&2
      exit 2
    fi
    status=0
    while IFS=$'\t' read -r name args; do call "$name" --args "$args" || status=1; done <<< "$calls"
    exit "$status" ;;
esac
