#!/bin/sh
# One-shot, idempotent MinIO setup (runs in the minio/mc image): the data-store bucket, the model-registry
# bucket with versioning on (every overwrite of a model or pointer stays recoverable), and a least-privilege
# user for Airflow (AWS_ACCESS_KEY_ID) limited to those two buckets. Bucket names come from the same
# POSTERGENRE_*_URL settings Airflow uses, so the two can't drift apart.
set -eu
bucket_of() { b="${1#s3://}"; echo "${b%%/*}"; }
data=$(bucket_of "$POSTERGENRE_STORE_URL")
registry=$(bucket_of "$POSTERGENRE_REGISTRY_URL")
policy=postergenre-rw

mc alias set local "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$data" "local/$registry"
mc version enable "local/$registry"

cat >/tmp/policy.json <<JSON
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": [
  "arn:aws:s3:::$data", "arn:aws:s3:::$data/*", "arn:aws:s3:::$registry", "arn:aws:s3:::$registry/*"]}]}
JSON
mc admin policy create local "$policy" /tmp/policy.json
mc admin user add local "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
case "$(mc admin user info local "$AWS_ACCESS_KEY_ID")" in
    *"$policy"*) ;;
    *) mc admin policy attach local "$policy" --user "$AWS_ACCESS_KEY_ID" ;;
esac
echo "minio-init: buckets $data, $registry (versioned); user $AWS_ACCESS_KEY_ID -> $policy"
