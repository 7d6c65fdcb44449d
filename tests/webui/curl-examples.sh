#!/usr/bin/env bash
# The Web UI API document's cURL examples (create a task, list with filters, execute), run
# against a gantry: BASE (http://host:port), then a username and password of a user who may
# write and execute. The document's placeholders are filled in as a reader would: the token
# from logging in, a project made first, the task's id from its creation. The task then runs
# on the project's backend; the script waits until it completes, and fails on any answer the
# document does not describe.
set -euo pipefail
BASE=$1
USERNAME=$2
PASSWORD=$3
BACKEND=${4:-claude}

json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
fail() { echo "curl-examples: $*" >&2; exit 1; }

# The document's health check.
curl -fsS -X GET "$BASE/api/health/" | json 'd["data"]["status"]' | grep -qx healthy \
    || fail "health is not healthy"

YOUR_TOKEN=$(curl -fsS -X POST "$BASE/api/auth/login" -H "Content-Type: application/json" \
    -d "{\"username\": \"$USERNAME\", \"password\": \"$PASSWORD\"}" | json 'd["data"]["access_token"]')
project_uuid=$(curl -fsS -X POST "$BASE/api/projects/" \
    -H "Authorization: Bearer $YOUR_TOKEN" -H "Content-Type: application/json" \
    -d "{\"name\": \"cURL examples\", \"settings\": {\"backend\": \"$BACKEND\"}}" | json 'd["data"]["id"]')

# Create Task
created=$(curl -fsS -X POST "$BASE/api/tasks/" \
  -H "Authorization: Bearer $YOUR_TOKEN" \
  -H "Content-Type: application/json" \
  -d '{
    "title": "Implement user authentication",
    "project_id": "'"$project_uuid"'",
    "priority": 1
  }')
task_uuid=$(echo "$created" | json 'd["data"]["id"]')
[ "$(echo "$created" | json 'd["data"]["status"]')" = pending ] || fail "created: $created"

# List Tasks with Filtering
listed=$(curl -fsS -X GET "$BASE/api/tasks/?status=pending&page=1&page_size=20" \
  -H "Authorization: Bearer $YOUR_TOKEN")
echo "$listed" | json '[t["id"] for t in d["data"]["items"]]' | grep -q "$task_uuid" \
    || fail "listed: $listed"
[ "$(echo "$listed" | json 'd["data"]["page_size"]')" = 20 ] || fail "page size: $listed"

# Execute Task
executed=$(curl -fsS -X POST "$BASE/api/tasks/$task_uuid/execute" \
  -H "Authorization: Bearer $YOUR_TOKEN" \
  -H "Content-Type: application/json" \
  -d '{"priority": "high"}')
[ "$(echo "$executed" | json 'd["data"]["status"]')" = queued ] || fail "executed: $executed"
echo "$executed" | json 'd["data"]["queue_position"]' >/dev/null

# The run: queued, running, then completed, with its progress at 100.
for _ in $(seq 1 600); do
    task=$(curl -fsS "$BASE/api/tasks/$task_uuid" -H "Authorization: Bearer $YOUR_TOKEN")
    status=$(echo "$task" | json 'd["data"]["status"]')
    case $status in
        completed) break ;;
        queued | running) sleep 0.1 ;;
        *) fail "the task ended $status: $task" ;;
    esac
done
[ "$status" = completed ] || fail "the task did not complete: $task"
[ "$(echo "$task" | json 'd["data"]["progress_percentage"]')" = 100 ] || fail "progress: $task"
echo "$task" | json 'd["data"]["run_id"]'
