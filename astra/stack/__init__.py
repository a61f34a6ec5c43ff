"""The embedded stack: real Postgres, Redis and an S3 server on loopback, for `make demo` and `astra dev`."""
