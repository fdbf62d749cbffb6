#!/bin/sh
# One-shot set-up of a one-node Garage for the registries, through Garage's admin API (v2):
# gives the node a role in the layout, creates the bucket, imports the registries' key and lets
# it read and write the bucket. Each step is skipped when already done, so it runs again on
# every `docker compose up`. Needs only sh, curl, grep and sed (the curl image has them).
#
# Environment: GARAGE_ADMIN (admin API URL), GARAGE_ADMIN_TOKEN, BUCKET, AWS_ACCESS_KEY_ID
# (GK + 24 hex digits), AWS_SECRET_ACCESS_KEY (64 hex digits), CAPACITY (bytes the node offers).
set -eu

# api METHOD ENDPOINT [JSON]: the response body; fails on any status but 2xx.
api() {
    if [ $# -ge 3 ]; then
        curl -sSf -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" \
            -H 'Content-Type: application/json' --data "$3" "$GARAGE_ADMIN/v2/$2"
    else
        curl -sSf -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" "$GARAGE_ADMIN/v2/$2"
    fi
}

# field NAME: the first string or number value of key NAME in the JSON on stdin.
field() { grep -o "\"$1\": *\"*[^\",}]*" | head -n 1 | sed 's/.*: *"*//'; }

i=0
until api GET GetClusterStatus >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 60 ] || { echo "garage-init: no answer from $GARAGE_ADMIN" >&2; exit 1; }
    sleep 1
done

status=$(api GET GetClusterStatus)
if [ "$(echo "$status" | field layoutVersion)" = 0 ]; then
    node=$(echo "$status" | field id)
    api POST UpdateClusterLayout \
        "{\"roles\":[{\"id\":\"$node\",\"zone\":\"dc1\",\"capacity\":$CAPACITY,\"tags\":[]}]}" >/dev/null
    api POST ApplyClusterLayout '{"version":1}' >/dev/null
    echo "garage-init: node $node given $CAPACITY bytes in layout version 1"
fi

if ! bucket=$(api GET "GetBucketInfo?globalAlias=$BUCKET" 2>/dev/null); then
    bucket=$(api POST CreateBucket "{\"globalAlias\":\"$BUCKET\"}")
    echo "garage-init: bucket $BUCKET created"
fi
bucket_id=$(echo "$bucket" | field id)

if ! api GET "GetKeyInfo?id=$AWS_ACCESS_KEY_ID" >/dev/null 2>&1; then
    api POST ImportKey "{\"accessKeyId\":\"$AWS_ACCESS_KEY_ID\",\"secretAccessKey\":\"$AWS_SECRET_ACCESS_KEY\",\"name\":\"registry\"}" >/dev/null
    echo "garage-init: key $AWS_ACCESS_KEY_ID imported"
fi
api POST AllowBucketKey \
    "{\"bucketId\":\"$bucket_id\",\"accessKeyId\":\"$AWS_ACCESS_KEY_ID\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":false}}" >/dev/null
echo "garage-init: key $AWS_ACCESS_KEY_ID may read and write bucket $BUCKET"
