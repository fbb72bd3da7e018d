#!/usr/bin/env python3
"""Test helper for the object-storage tests, talking to the local S3-compatible server named
by AWS_ENDPOINT_URL (moto in server mode) with boto3:

  s3_tool.py mkbucket BUCKET
  s3_tool.py put BUCKET KEY FILE      upload FILE as KEY
  s3_tool.py get BUCKET KEY FILE      download KEY into FILE (exit 3 if it does not exist)
  s3_tool.py ls BUCKET [PREFIX]       print the keys, one per line
"""
import sys

import boto3
from botocore.exceptions import ClientError

s3 = boto3.client("s3")
cmd, bucket, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
if cmd == "mkbucket":
    s3.create_bucket(Bucket=bucket)
elif cmd == "put":
    s3.upload_file(rest[1], bucket, rest[0])
elif cmd == "get":
    try:
        s3.download_file(bucket, rest[0], rest[1])
    except ClientError as e:
        sys.exit(3 if e.response["Error"]["Code"] in ("404", "NoSuchKey") else 1)
elif cmd == "ls":
    prefix = rest[0] if rest else ""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            print(obj["Key"])
else:
    sys.exit(f"s3_tool.py: unknown command {cmd}")
