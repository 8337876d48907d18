"""A real S3 server for tests: moto's server on 127.0.0.1:<ephemeral, or argv[2]>, with one
bucket (argv[1]).

Prints "port N" once the bucket exists, then serves until stdin closes (the test dropped
its handle) or the process is killed (the tests kill it to take the bucket down).
"""
import logging
import sys

logging.disable(logging.CRITICAL)

from moto.server import ThreadedMotoServer  # noqa: E402
import boto3  # noqa: E402

bucket = sys.argv[1]
wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 0
server = ThreadedMotoServer(ip_address="127.0.0.1", port=wanted, verbose=False)
server.start()
_, port = server.get_host_and_port()
# moto wants signed requests, as S3 does: create the bucket through boto3.
boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    region_name="us-east-1",
).create_bucket(Bucket=bucket)
print(f"port {port}", flush=True)
for _ in sys.stdin:
    pass
