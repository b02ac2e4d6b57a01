"""The S3 operations, one module per resource or sub-resource.

- ``service``: ListBuckets
- ``bucket``: Create/Delete/HeadBucket, GetBucketLocation, ListObjects and ListObjectsV2
- ``object``: Put/Get/Head/DeleteObject (ranges, conditions, response overrides)
- ``copy_object``: CopyObject (and the copy source UploadPartCopy shares)
- ``multipart``: the multipart uploads, UploadPartCopy, ListParts, ListMultipartUploads
- ``delete_objects``: DeleteObjects
- ``post_object``: browser form uploads (presigned POST)
- sub-resources: ``acl`` (bucket ACLs), ``cors`` (bucket CORS, preflight), ``tagging``
  (object tags), ``versioning``, ``versions`` (ListObjectVersions)

A new sub-resource (lifecycle, policy, object lock...) gets its module here, named after
it, and its rows in ``frontend.routes`` (where it now answers NotImplemented).
Every handler is reached through ``frontend.routes.dispatch``, which has already checked
the key and the access the route needs.
"""
