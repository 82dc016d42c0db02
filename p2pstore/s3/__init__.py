"""The S3 front end: SigV4-authenticated S3 requests on their own port, translated onto the
same coordinator as the native API (a bucket is a top-level folder of the native namespace)."""
