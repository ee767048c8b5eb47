#!/usr/bin/env bash
# azd postprovision hook (azure.yaml; docs/azure.md). After `azd provision` / `azd up`:
#   1. writes .env from the azd environment's outputs: endpoints and deployment names only, no key
#      (every service has keys disabled; you sign in with `az login`), an earlier .env is kept in
#      .labkit/env-backups/;
#   2. creates .venv with `make setup` if it is missing;
#   3. runs `labkit index build --strategy all` and `labkit data load` against the new resources,
#      retrying while the new role assignments propagate (up to about ten minutes).
# Set LABKIT_AZD_SKIP_DATA=1 to only write .env. Safe to run again by hand: scripts/azd/postprovision.sh
# (from the repository, with azd on PATH).

# azd runs hooks with `sh`; this script needs bash (arrays, pipefail)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# The variables written to .env: the kit reads them (labkit/config.py). Never a key, never AZURE_CLIENT_ID
# (that is the app's managed identity; on your machine it would steer DefaultAzureCredential away from
# your `az login`).
ENV_VARS=(
  AZURE_OPENAI_ENDPOINT
  AZURE_OPENAI_CHAT_DEPLOYMENT
  AZURE_OPENAI_EMBEDDING_DEPLOYMENT
  AZURE_OPENAI_EMBEDDING_DIMENSIONS
  AZURE_SEARCH_ENDPOINT
  AZURE_COSMOS_ENDPOINT
  AZURE_COSMOS_DATABASE
  AZURE_CONTENT_SAFETY_ENDPOINT
)
# Variables that would override the keyless Azure set-up for the two commands below if your shell had them.
OVERRIDES=(
  LABKIT_CHAT_BACKEND LABKIT_EMBED_BACKEND LABKIT_SEARCH_BACKEND LABKIT_STORE_BACKEND LABKIT_ENV_FILE
  AZURE_OPENAI_API_KEY AZURE_SEARCH_API_KEY AZURE_COSMOS_KEY AZURE_CONTENT_SAFETY_KEY AZURE_CLIENT_ID
)

say() { printf 'postprovision: %s\n' "$*"; }
fail() { printf 'postprovision: %s\n' "$*" >&2; exit 1; }

# ---- 1. values from the azd environment (azd also exports them to hooks; get-values works by hand too)
# (bash 3.2 compatible, macOS's /bin/bash: no associative arrays)
AZD_VALUES=""
if command -v azd >/dev/null 2>&1; then
  AZD_VALUES="$(azd env get-values)"
fi
lookup() {  # the value of $1: from `azd env get-values`, else from this process's environment
  local line
  line="$(printf '%s\n' "$AZD_VALUES" | grep -m1 "^$1=" || true)"
  if [ -n "$line" ]; then
    line="${line#*=}"
    line="${line#\"}"
    printf '%s' "${line%\"}"
  else
    printf '%s' "${!1:-}"
  fi
}
missing=()
for name in "${ENV_VARS[@]}"; do
  if [ -z "$(lookup "$name")" ]; then missing+=("$name"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  fail "the azd environment has no ${missing[*]}: run azd provision first"
fi

# ---- 2. .env (the earlier one, e.g. your local settings, goes to .labkit/env-backups/)
if [ -f .env ]; then
  mkdir -p .labkit/env-backups
  backup=".labkit/env-backups/env.$(date +%Y%m%d-%H%M%S)"
  cp -p .env "$backup"
  chmod 600 "$backup"  # it may hold keys of an earlier set-up
  say "kept the earlier .env as $backup"
fi
tmp="$(mktemp .env.tmp.XXXXXX)"
trap 'rm -f "$tmp"' EXIT
{
  printf '# Written by scripts/azd/postprovision.sh from the azd environment %s (docs/azure.md).\n' \
    "$(lookup AZURE_ENV_NAME)"
  printf '# Keyless: sign in with `az login`; no key is needed or accepted (local auth is disabled).\n'
  printf '# Switch one service back to the embedded default with e.g. LABKIT_SEARCH_BACKEND=local.\n'
  printf 'LABKIT_BACKEND=azure\n'
  for name in "${ENV_VARS[@]}"; do
    printf '%s=%s\n' "$name" "$(lookup "$name")"
  done
  printf '# The guards on Azure AI Content Safety (the cloud image uses it; locally the offline guard is the default):\n'
  printf '# LABKIT_SAFETY_BACKEND=azure\n'
} >"$tmp"
chmod 600 "$tmp"
mv "$tmp" .env
trap - EXIT
say "wrote .env (LABKIT_BACKEND=azure and ${#ENV_VARS[@]} endpoints and names)"

if [ "${LABKIT_AZD_SKIP_DATA:-0}" = "1" ]; then
  say "LABKIT_AZD_SKIP_DATA=1: not building the indexes or loading the customers"
  exit 0
fi

# ---- 3. indexes and customers in the new resources
if [ ! -x .venv/bin/python ]; then
  say ".venv is missing: make setup (the first time builds llama.cpp, several minutes)"
  make setup
fi

unset_args=()
for name in "${OVERRIDES[@]}"; do unset_args+=(-u "$name"); done

labkit() {
  env "${unset_args[@]}" LABKIT_BACKEND=azure .venv/bin/python -m labkit.cli "$@"
}

# new role assignments take minutes to reach the data planes: 403s until then
retry() {
  local attempt=1 attempts="${LABKIT_AZD_ATTEMPTS:-10}" wait_s="${LABKIT_AZD_RETRY_SECONDS:-60}"
  until labkit "$@"; do
    if [ "$attempt" -ge "$attempts" ]; then
      fail "labkit $* failed $attempts times; run scripts/azd/postprovision.sh again in a few minutes"
    fi
    say "labkit $* failed (attempt $attempt of $attempts; new role assignments can take minutes): retrying in ${wait_s}s"
    attempt=$((attempt + 1))
    sleep "$wait_s"
  done
}

say "building the search indexes in Azure AI Search (embeddings from Azure OpenAI)"
retry index build --strategy all
say "loading customers and orders into Cosmos DB"
retry data load
say "done. Next: azd deploy runs next in azd up; see docs/azure.md for tokens and the URL"
